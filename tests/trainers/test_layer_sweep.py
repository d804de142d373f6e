"""Layer pruning (keep_layers) and L3Prune's per-layer criterion, without Ray."""

import pytest
import torch
import torch.nn.functional as F

from trainers import EmbeddingModel
from trainers.layer_sweep import Cutoffs, cutoffs, layer_losses, local_minima, pooled_per_layer
from trainers.loss import loss_from_embeddings
from trainers.objectives import StepInputs
from trainers.pooling import masked_mean
from trainers.tiny import tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "quantum chromodynamics", "the history of Rome",
         "rivers flow to the sea", "bread is baked from flour"]


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory, wiki_texts):
    """A tiny Llama with 4 layers (the packaged tiny ones have 2)."""
    import copy

    from transformers import AutoModel

    from trainers.tiny import train_tokenizer

    out = str(tmp_path_factory.mktemp("tiny4") / "m")
    tokenizer = train_tokenizer(wiki_texts[:200])
    torch.manual_seed(0)
    AutoModel.from_config(copy.deepcopy(tiny_config("llama", len(tokenizer), layers=4))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_pruned_decoder_has_n_layers_after_reload_and_equals_the_first_n(tiny4, tmp_path):
    full = EmbeddingModel.from_pretrained(tiny4, pooling="mean").eval()
    pruned = EmbeddingModel.from_pretrained(tiny4, pooling="mean", keep_layers=2).eval()
    assert len(pruned.backbone.layers) == 2 and pruned.backbone.config.num_hidden_layers == 2
    pruned.save_pretrained(str(tmp_path))
    reloaded = EmbeddingModel.from_pretrained(str(tmp_path)).eval()
    assert len(reloaded.backbone.layers) == 2
    feats = full.tokenize(TEXTS)
    with torch.no_grad():
        states = full.backbone(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"],
                               output_hidden_states=True).hidden_states
        # The pruned model's output is the full model's layer-2 state through the final norm.
        expected = F.normalize(masked_mean(full.backbone.norm(states[2]), feats["embed_mask"]), dim=-1)
    assert torch.allclose(torch.from_numpy(reloaded.encode(TEXTS)), expected, atol=1e-5)
    assert not torch.allclose(torch.from_numpy(full.encode(TEXTS)), expected, atol=1e-3)  # the top layers mattered


def test_a_fraction_keeps_that_share_of_the_layers(tiny4):
    assert len(EmbeddingModel.from_pretrained(tiny4, pooling="mean", keep_layers=0.5).backbone.layers) == 2
    assert len(EmbeddingModel.from_pretrained(tiny4, pooling="mean", keep_layers=0.1).backbone.layers) == 1


def _inputs(model, b=3, k=1):
    texts = TEXTS[:b] + TEXTS[b:2 * b] + TEXTS[:b * k]
    return StepInputs(features=model.tokenize(texts), b=b, k=k, in_batch=True, pos_keys=torch.arange(b),
                      neg_keys=torch.arange(100, 100 + b * k).reshape(b, k), labels=torch.full((b,), -1),
                      neg_labels=torch.full((b, k), -1))


def test_layer_zero_is_the_embedding_output_and_each_layer_its_own(tiny4):
    model = EmbeddingModel.from_pretrained(tiny4, pooling="mean").eval()
    inputs = _inputs(model)
    losses = layer_losses(model, [inputs], temperature=0.05)
    assert len(losses) == 5  # embeddings + 4 layers
    feats = inputs.features
    with torch.no_grad():
        emb = F.normalize(masked_mean(model.backbone.embed_tokens(feats["input_ids"]), feats["embed_mask"]), dim=-1)
        per_layer = pooled_per_layer(model.backbone, feats)
    assert torch.allclose(per_layer[0], emb, atol=1e-6)
    b = inputs.b

    def loss_of(e):
        return float(loss_from_embeddings(e[:b], e[b:2 * b], e[2 * b:].reshape(b, 1, -1), 0.05, True,
                                          inputs.pos_keys, inputs.neg_keys, inputs.labels, inputs.neg_labels))

    assert losses[0] == pytest.approx(loss_of(emb), rel=1e-5)
    assert losses[-1] == pytest.approx(loss_of(torch.from_numpy(model.encode(TEXTS[:3] + TEXTS[3:6] + TEXTS[:3]))),
                                       rel=1e-4)  # the last layer is what the model encodes with
    assert len(set(round(x, 6) for x in losses)) == 5


def test_cutoffs_are_the_lowest_minimum_of_each_half():
    #          layer: 0    1    2    3    4    5    6    7    8    9   10
    curve = [9.0, 5.0, 4.0, 4.5, 6.0, 5.5, 3.9, 3.0, 3.5, 3.2, 3.4]
    assert local_minima(curve) == [2, 7, 9]  # layer 1 is not compared with the embeddings
    assert cutoffs(curve).small == 2 and cutoffs(curve).large == 7
    assert cutoffs([3.0, 2.0, 1.0]) == Cutoffs(large=2, small=None)  # falling to the end: keep every layer
