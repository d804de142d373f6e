"""One bf16 training step of the contrastive model, LoRA and latent-attention pooling: on
the CPU in every run, and on a CUDA GPU with `pytest -m gpu`."""

import pytest
import torch

from trainers import EmbeddingModel, LoraSettings, PoolingConfig
from trainers.loss import loss_from_embeddings
from trainers.tiny import build_tiny_decoder

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "quantum chromodynamics", "the history of Rome",
         "rivers flow to the sea", "bread is baked from flour"] * 4


@pytest.mark.parametrize("device", DEVICES)
def test_a_bf16_lora_step_lowers_the_loss_on_its_batch(tmp_path, device):
    path = build_tiny_decoder("mistral", str(tmp_path / "m"), TEXTS)
    torch.manual_seed(0)
    model = EmbeddingModel.from_pretrained(path, pooling=PoolingConfig(mode="latent_attention"),
                                           dtype=torch.bfloat16, lora=LoraSettings()).to(device)
    # The frozen backbone is bf16; peft keeps the LoRA adapters in fp32 (autocast_adapter_dtype).
    assert {p.dtype for p in model.backbone.parameters() if not p.requires_grad} == {torch.bfloat16}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or not n.startswith("backbone") for n in trainable)
    model.train()
    b, k = 4, 2
    texts = TEXTS[:b] + TEXTS[b:2 * b] + TEXTS[2 * b:2 * b + b * k]
    feats = {name: v.to(device) for name, v in model.tokenize(texts, [""] * len(texts), 32).items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        emb = model(**feats)
        loss = loss_from_embeddings(emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, k, -1), 0.05, True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), trainable[n])]
    assert moved, "no trainable parameter changed"
