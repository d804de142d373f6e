"""The text objectives without Ray: MNTP and SimCSE steps on a tiny decoder, the corpus
reader's order, and what each saves."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from trainers import EmbeddingModel
from trainers.config import TrainConfig
from trainers.model import CONFIG_NAME
from trainers.objectives import objective_for
from trainers.text_batches import TextBatches, row_groups
from trainers.tiny import build_tiny_decoder

LOCAL = pafs.LocalFileSystem()


def _corpus(folder, texts, row_group_size=7, files=2):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.array(texts, dtype=object), files)):
        path = os.path.join(folder, f"part-{i}.parquet")
        pq.write_table(pa.table({"doc_id": [f"d{i}-{j}" for j in range(len(part))], "text": list(part)}), path,
                       row_group_size=row_group_size)
        paths.append(path)
    return paths


def test_an_epoch_reads_every_passage_once_split_over_workers(tmp_path):
    texts = [f"passage {i}" for i in range(50)]
    groups = row_groups(_corpus(str(tmp_path), texts), LOCAL)
    assert sum(g.rows for g in groups) == 50 and len(groups) > 4
    world, global_batch = 2, 8
    readers = [TextBatches(groups, LOCAL, r, world, global_batch, seed=3) for r in range(world)]
    assert readers[0].num_batches == 6  # 48 of 50: the incomplete last batch is dropped
    epoch0 = [t for s in range(6) for r in readers for t in r.texts_for_step(s)]
    assert len(epoch0) == len(set(epoch0)) == 48
    assert epoch0 != sorted(epoch0, key=lambda t: int(t.split()[1]))  # shuffled
    epoch1 = [t for s in range(6, 12) for r in readers for t in r.texts_for_step(s)]
    assert len(set(epoch1)) == 48 and epoch1 != epoch0  # a new order each epoch
    # A fresh reader (a resumed run) reads any step exactly as the first one did.
    fresh = TextBatches(groups, LOCAL, 1, world, global_batch, seed=3)
    assert fresh.texts_for_step(9) == readers[1].texts_for_step(9)
    assert len(readers[0]._cache) <= 2  # never more than two row groups held


def test_a_corpus_smaller_than_one_batch_is_refused(tmp_path):
    groups = row_groups(_corpus(str(tmp_path), ["a", "b", "c"], files=1), LOCAL)
    with pytest.raises(ValueError, match="fewer than one global batch of 8"):
        TextBatches(groups, LOCAL, 0, 1, 8, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, wiki_texts):
    return build_tiny_decoder("mistral", str(tmp_path_factory.mktemp("tiny") / "m"), wiki_texts)


def _train(cfg, files, backbone, steps):
    objective = objective_for(cfg, files, LOCAL, 0, 1, 0)
    torch.manual_seed(0)
    model = objective.build(backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    model.train()
    losses = []
    for step in range(steps):
        torch.manual_seed(step)
        out = objective.step(model, model, step, "cpu")
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return objective, model, losses


@pytest.mark.parametrize("objective", ["mntp", "simcse"])
def test_a_text_objective_lowers_its_loss_and_saves_a_bidirectional_encoder(tmp_path, tiny, wiki_texts, objective):
    files = _corpus(str(tmp_path / "corpus"), wiki_texts[:64], row_group_size=16)
    cfg = TrainConfig.from_dict(
        {"objective": objective, "corpus": "c", "global_batch": 16, "pooling": "mean", "lr": 5e-3,
         "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "max_length": 48, "num_workers": 1,
         # A random tiny decoder already tells texts apart (cosine 0.31 between texts, 0.99
         # between the two views): at LLM2Vec's 0.05 the SimCSE loss starts near 0.001.
         "temperature": 0.5})
    obj, model, losses = _train(cfg, files, tiny, 8)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # the LM head and the decoder stay frozen
    obj.before_save(model)
    out = str(tmp_path / "saved")
    model.save_pretrained(out)
    assert os.path.isfile(os.path.join(out, CONFIG_NAME))
    reloaded = EmbeddingModel.from_pretrained(out)
    assert reloaded.config.pooling.mode == "mean" and reloaded.config.is_decoder
    assert not reloaded.backbone.config.is_causal
    own = EmbeddingModel.from_pretrained(tiny).backbone.config
    assert reloaded.backbone.config.attention_dropout == own.attention_dropout  # SimCSE's 0.3 is not saved
    # Bidirectional after reload: changing the last word changes the first token's state.
    ids = reloaded.tokenize(["the river runs to the sea", "the river runs to the hill"])
    with torch.no_grad():
        hidden = reloaded.backbone(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    assert not torch.allclose(hidden[0, 1], hidden[1, 1], atol=1e-6)


def test_mntp_reads_the_lm_head_and_masks_with_the_configured_token(tmp_path, tiny, wiki_texts):
    from trainers.mntp import IGNORE
    from trainers.mntp_model import MntpModel

    cfg = TrainConfig.from_dict({"objective": "mntp", "corpus": "c", "global_batch": 4, "pooling": "mean",
                                 "num_workers": 1, "mntp": {"mask_token": "<mask>"}})
    model = MntpModel.from_pretrained(tiny, cfg.pooling, cfg.mntp, lora=cfg.lora)
    assert model.tokenizer.convert_tokens_to_ids("<mask>") == len(model.tokenizer) - 1  # added
    assert model.masking.mask_probability == 0.8 and model.masking.replacement == "mask"  # Mistral's preset
    feats = model.tokenize(wiki_texts[:4], 32)
    chosen = feats["labels"] != IGNORE
    assert (feats["input_ids"][chosen] == model.mask_id).all()
    assert not torch.isin(feats["input_ids"][~chosen], torch.tensor([model.mask_id])).any()


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", ["mntp", "simcse"])
def test_a_bf16_text_objective_step_is_finite_and_lowers_its_batch_loss(tmp_path, tiny, wiki_texts, objective,
                                                                       device):
    """bf16 weights (LoRA kept in fp32 by peft), as a GPU run trains: on the CPU in every run,
    on CUDA with `pytest -m gpu`. The same batch three times: its loss must fall."""
    files = _corpus(str(tmp_path / "corpus"), wiki_texts[:32], row_group_size=16)
    cfg = TrainConfig.from_dict({"objective": objective, "corpus": "c", "global_batch": 8, "pooling": "mean",
                                 "lr": 1e-2, "bf16": True, "num_workers": 1, "max_length": 48, "temperature": 0.5,
                                 "lora": {"r": 8, "alpha": 16, "dropout": 0.0}})
    obj = objective_for(cfg, files, LOCAL, 0, 1, 0)
    torch.manual_seed(0)
    model = obj.build(tiny).to(device)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    model.train()
    losses = []
    for _ in range(3):
        torch.manual_seed(0)  # the same masking and dropout each time: only the weights change
        out = obj.step(model, model, 0, device)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
