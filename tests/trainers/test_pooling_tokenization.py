import pytest
import torch
from tokenizers import Tokenizer, models, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from storage import PACKAGED_MINILM, resolve_packaged
from trainers.pooling import Pooler, PoolingConfig, last_token, masked_mean, positional_weighted_mean, weighted_mean
from trainers.tokenization import (
    JoinedInputs,
    append_eos,
    batch_encode,
    boundary_merges,
    encode_pair,
    prompt_length,
    special_layout,
)


def test_mean_weighted_and_last_token_on_hand_made_states():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [5.0, 0.0], [100.0, 100.0]]])  # (1, 4, 2)
    mask = torch.tensor([[0, 1, 1, 0]])  # token 0 = instruction, token 3 = padding
    assert torch.allclose(masked_mean(hidden, mask), torch.tensor([[4.0, 0.0]]))
    assert torch.allclose(weighted_mean(hidden, mask), torch.tensor([[(3 * 1 + 5 * 2) / 3, 0.0]]))
    assert torch.allclose(last_token(hidden, mask), torch.tensor([[5.0, 0.0]]))
    left = torch.tensor([[0, 0, 1, 1]])
    assert torch.allclose(last_token(hidden, left), torch.tensor([[100.0, 100.0]]))


def test_positional_weights_count_from_the_first_real_token():
    """sentence-transformers' weightedmean: token i (1-based, after left padding) weighs i,
    the unpooled instruction's positions included in the count."""
    hidden = torch.tensor([[[1.0], [3.0], [5.0], [7.0]], [[9.0], [1.0], [3.0], [5.0]]])  # (2, 4, 1)
    attention = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])  # right padding; left padding
    pooled = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])  # token 0 of row 0 (and 1 of row 1) is the instruction
    out = positional_weighted_mean(hidden, pooled, attention)
    assert torch.allclose(out, torch.tensor([[(3 * 2 + 5 * 3) / 5], [(3 * 2 + 5 * 3) / 5]]))
    assert torch.allclose(weighted_mean(hidden[:1], pooled[:1]), torch.tensor([[(3 * 1 + 5 * 2) / 3]]))


@pytest.mark.parametrize("mode", ["latent_attention", "mean", "weighted_mean", "last_token"])
def test_masked_positions_never_reach_the_embedding(mode):
    torch.manual_seed(0)
    pooler = Pooler(16, PoolingConfig(mode=mode, num_latents=8, num_heads=4)).eval()
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    base = pooler(hidden, mask, attention)
    disturbed = hidden.clone()
    disturbed[mask == 0] = torch.randn(int((mask == 0).sum()), 16) * 50
    assert torch.allclose(pooler(disturbed, mask, attention), base, atol=1e-5)
    assert torch.allclose(base.norm(dim=-1), torch.ones(2), atol=1e-5)
    disturbed[0, 3] += 1.0  # a pooled token (the last one, for last_token) does matter
    assert not torch.allclose(pooler(disturbed, mask, attention)[0], base[0], atol=1e-6)


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


def test_joined_inputs_count_the_prompt_as_sentence_transformers_does():
    """The sentence-transformers convention: one string, the prompt masked by its standalone
    count. Where merges cross the boundary the count covers the text's first token: kept,
    because that is what a plain sentence-transformers folder computes, and reported."""
    tok = _crossing_tokenizer()
    inputs = JoinedInputs(tok, add_eos=False)
    assert prompt_length(tok, "ab", 16) == 1
    assert inputs.encode("ab", "cd", 16) == ([7, 8], [0, 1])  # "abc" merged: the count takes it
    assert boundary_merges(tok, "ab", "cd") and not boundary_merges(tok, "d", "ab")
    assert inputs.encode("", "cd", 16) == ([5, 8], [1, 1])
    with pytest.raises(ValueError, match="max_length 1 leaves no room for the text after a 1-token instruction"):
        inputs.encode("ab", "cd", 1)


def test_bert_joined_inputs_pool_cls_only_without_a_prompt():
    tok = AutoTokenizer.from_pretrained(resolve_packaged(PACKAGED_MINILM))
    inputs = JoinedInputs(tok, add_eos=False)
    ids, mask = inputs.encode("", "a short text", 16)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and all(mask)
    ids, mask = inputs.encode("classify the topic: ", "a long text " * 20, 16)
    n = 1 + len(tok("classify the topic: ", add_special_tokens=False)["input_ids"])  # [CLS] + the prompt
    assert len(ids) == 16 and mask == [0] * n + [1] * (16 - n) and ids[-1] == tok.sep_token_id


def test_append_eos_is_part_of_the_saved_tokenizer(tmp_path):
    tok = _crossing_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)])
    assert tok("cd")["input_ids"] == [1, 5, 8]
    assert append_eos(tok)
    assert tok("cd")["input_ids"] == [1, 5, 8, 2]
    tok.save_pretrained(str(tmp_path))
    assert AutoTokenizer.from_pretrained(str(tmp_path))("cd")["input_ids"] == [1, 5, 8, 2]
    inputs = JoinedInputs(AutoTokenizer.from_pretrained(str(tmp_path)), add_eos=True)
    assert inputs.standard and inputs.encode("", "cd" * 20, 6) == ([1, 5, 8, 5, 8, 2], [1] * 6)


def test_a_tokenizer_that_cannot_append_eos_gets_it_from_quarry():
    tok = AutoTokenizer.from_pretrained(resolve_packaged(PACKAGED_MINILM))
    tok.eos_token = tok.sep_token  # a BERT tokenizer already ends in [SEP]: that counts as its EOS
    assert append_eos(tok)
    tok = _crossing_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<pad> $A", special_tokens=[("<pad>", 0)])  # a leading special that is not BOS
    inputs = JoinedInputs(tok, add_eos=True)
    assert not inputs.standard and inputs.encode("", "cd", 16) == ([0, 5, 8, 2], [1, 1, 1, 1])
