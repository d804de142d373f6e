"""Bidirectionality, proven per family, attention implementation, batch size and padding side.

Changing the LAST real token must change the FIRST token's hidden state, and changing
padding tokens must change nothing. The causal control shows the test can fail.
"""

import copy

import pytest
import torch
from transformers import AutoModel

from trainers.model import _load_backbone, flash_attention_available
from trainers.tiny import FAMILIES, tiny_config

IMPLEMENTATIONS = ["eager", "sdpa"] + (["flash_attention_2"] if flash_attention_available() else [])
# The same proof on a CUDA GPU (`pytest -m gpu`), with the GPU's kernels: sdpa dispatches to
# its flash and memory-efficient kernels there. fp32, so that the tolerances stay those of
# the CPU proof; flash_attention_2 (bf16/fp16 only) is proven where flash-attn is installed.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    paths = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(family)
        AutoModel.from_config(copy.deepcopy(tiny_config(family, vocab_size=64))).save_pretrained(path)
        paths[family] = str(path)
    return paths


def _batch(batch_size, side, lengths=(6, 4, 5)):
    lengths = lengths[:batch_size]
    width = max(lengths)
    ids = torch.zeros(batch_size, width, dtype=torch.long)
    mask = torch.zeros(batch_size, width, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    for i, n in enumerate(lengths):
        tokens = torch.randint(3, 64, (n,), generator=g)
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, sl], mask[i, sl] = tokens, 1
    return ids, mask, lengths


def _first_last(mask, i):
    real = mask[i].nonzero().flatten()
    return int(real[0]), int(real[-1])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", IMPLEMENTATIONS)
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("device", DEVICES)
def test_last_token_reaches_first_and_padding_is_invisible(saved, family, attn, batch_size, side, device):
    if attn == "flash_attention_2" and device == "cpu":
        pytest.skip("flash_attention_2 runs on CUDA only")
    dtype = torch.bfloat16 if attn == "flash_attention_2" else None
    model, is_decoder = _load_backbone(saved[family], True, attn, dtype, False, None)
    assert is_decoder and model.config.is_causal is False
    model.to(device).eval()
    ids, mask, _ = _batch(batch_size, side)
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for i in range(batch_size):
            first, last = _first_last(mask, i)
            changed = ids.clone()
            changed[i, last] = (changed[i, last] + 7) % 61 + 3
            out = model(input_ids=changed, attention_mask=mask).last_hidden_state
            assert not torch.allclose(out[i, first], base[i, first], atol=1e-5), "first token did not see the last"
        repadded = ids.clone()
        repadded[mask == 0] = 17  # different pad ids must not matter
        out = model(input_ids=repadded, attention_mask=mask).last_hidden_state
        real = mask.bool()
        assert torch.allclose(out[real], base[real], atol=1e-5), "padding leaked into real tokens"


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_control_first_token_does_not_see_the_last(saved, family):
    model, _ = _load_backbone(saved[family], False, "sdpa", None, False, None)
    model.eval()
    ids, mask, _ = _batch(1, "right")
    first, last = _first_last(mask, 0)
    changed = ids.clone()
    changed[0, last] = (changed[0, last] + 7) % 61 + 3
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask).last_hidden_state
        b = model(input_ids=changed, attention_mask=mask).last_hidden_state
    assert torch.allclose(a[0, first], b[0, first], atol=1e-6)


def test_bidirectional_flag_survives_save_and_reload(saved, tmp_path):
    model, _ = _load_backbone(saved["mistral"], True, "sdpa", None, False, None)
    model.save_pretrained(tmp_path)
    reloaded, _ = _load_backbone(str(tmp_path), True, "eager", None, False, None)
    assert reloaded.config.is_causal is False
