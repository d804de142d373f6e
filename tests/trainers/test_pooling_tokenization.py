import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from storage import PACKAGED_MINILM, resolve_packaged
from trainers.pooling import Pooler, PoolingConfig, last_token, masked_mean, weighted_mean
from trainers.tokenization import batch_encode, encode_pair, special_layout


def test_mean_weighted_and_last_token_on_hand_made_states():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [5.0, 0.0], [100.0, 100.0]]])  # (1, 4, 2)
    mask = torch.tensor([[0, 1, 1, 0]])  # token 0 = instruction, token 3 = padding
    assert torch.allclose(masked_mean(hidden, mask), torch.tensor([[4.0, 0.0]]))
    assert torch.allclose(weighted_mean(hidden, mask), torch.tensor([[(3 * 1 + 5 * 2) / 3, 0.0]]))
    assert torch.allclose(last_token(hidden, mask), torch.tensor([[5.0, 0.0]]))
    left = torch.tensor([[0, 0, 1, 1]])
    assert torch.allclose(last_token(hidden, left), torch.tensor([[100.0, 100.0]]))


@pytest.mark.parametrize("mode", ["latent_attention", "mean", "weighted_mean", "last_token"])
def test_masked_positions_never_reach_the_embedding(mode):
    torch.manual_seed(0)
    pooler = Pooler(16, PoolingConfig(mode=mode, num_latents=8, num_heads=4)).eval()
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    base = pooler(hidden, mask)
    disturbed = hidden.clone()
    disturbed[mask == 0] = torch.randn(int((mask == 0).sum()), 16) * 50
    assert torch.allclose(pooler(disturbed, mask), base, atol=1e-5)
    assert torch.allclose(base.norm(dim=-1), torch.ones(2), atol=1e-5)
    disturbed[0, 3] += 1.0  # a pooled token (the last one, for last_token) does matter
    assert not torch.allclose(pooler(disturbed, mask)[0], base[0], atol=1e-6)


def _crossing_tokenizer():
    """A BPE whose merges cross the instruction/text boundary: "ab" + "c" -> "abc"."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5, "ab": 6, "abc": 7, "d": 8}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b"), ("ab", "c")]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_instruction_boundary_is_exact_when_merges_cross_it():
    tok = _crossing_tokenizer()
    assert tok("abc", add_special_tokens=False)["input_ids"] == [7]  # the joined string merges across
    layout = special_layout(tok, add_eos=True)
    ids, mask = encode_pair(tok, layout, "ab", "cd", max_length=16)
    assert ids == [6, 5, 8, 2]  # instruction "ab", text "c" "d", then EOS
    assert mask == [0, 1, 1, 1]
    # Counting the instruction's tokens on the joined ids ("abcd" -> [abc, d]) would have put
    # the boundary inside the merged token and pooled only "d".
    joined = tok("abcd", add_special_tokens=False)["input_ids"]
    naive = [0] * len(tok("ab", add_special_tokens=False)["input_ids"]) + [1] * (len(joined) - 1)
    assert joined == [7, 8] and naive == [0, 1]


def test_bert_layout_masks_cls_and_instruction_and_truncates_text_only():
    tok = AutoTokenizer.from_pretrained(resolve_packaged(PACKAGED_MINILM))
    layout = special_layout(tok, add_eos=False)
    assert layout.prefix == (tok.cls_token_id,) and layout.suffix == (tok.sep_token_id,)
    ids, mask = encode_pair(tok, layout, "classify the topic:", "a long text " * 20, max_length=16)
    n_ins = len(tok("classify the topic:", add_special_tokens=False)["input_ids"])
    assert len(ids) == 16 and mask[: 1 + n_ins] == [0] * (1 + n_ins) and all(mask[1 + n_ins:])
    batch = batch_encode(tok, layout, ["", "classify:"], ["short", "a bit longer text"], 32, "left")
    assert batch["input_ids"].shape == batch["embed_mask"].shape
    assert (batch["embed_mask"] <= batch["attention_mask"]).all()
    assert batch["attention_mask"][0, 0] == 0  # left padding
