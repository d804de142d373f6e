"""MNTP: which tokens may be masked, how they are replaced, and where each is predicted from."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainers.mntp import IGNORE, mask_for_mntp, mntp_loss, selectable, selected_logits

BOS, EOS, PAD, MASK = 1, 2, 0, 3
SPECIAL = torch.tensor([PAD, BOS, EOS])


def _batch():
    # Two rows, right-padded: <s> text... </s> <pad>...
    ids = torch.tensor([[BOS, 10, 11, 12, 13, EOS, PAD, PAD],
                        [BOS, 20, 21, 22, 23, 24, 25, EOS]])
    return ids, (ids != PAD).long()


def test_special_tokens_padding_and_the_first_position_are_never_selected():
    ids, mask = _batch()
    ok = selectable(ids, mask, SPECIAL)
    assert ok.tolist() == [[False, True, True, True, True, False, False, False],
                           [False, True, True, True, True, True, True, False]]
    for seed in range(20):
        out = mask_for_mntp(ids, mask, SPECIAL, MASK, 1.0, "mask", 50, torch.Generator().manual_seed(seed))
        chosen = out.labels != IGNORE
        assert torch.equal(chosen, ok)  # probability 1: every selectable token, nothing else
        assert (out.input_ids[chosen] == MASK).all() and torch.equal(out.input_ids[~chosen], ids[~chosen])
        assert torch.equal(out.labels[chosen], ids[chosen])


def test_bert_replacement_is_80_mask_10_random_10_kept():
    ids = torch.randint(10, 1000, (64, 256))
    ids[:, 0] = BOS
    mask = torch.ones_like(ids)
    out = mask_for_mntp(ids, mask, SPECIAL, MASK, 0.2, "bert", 1000, torch.Generator().manual_seed(0))
    chosen = out.labels != IGNORE
    share = chosen.sum().item() / selectable(ids, mask, SPECIAL).sum().item()
    assert share == pytest.approx(0.2, abs=0.01)
    masked = (out.input_ids[chosen] == MASK).float().mean().item()
    kept = (out.input_ids[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)
    randomised = out.input_ids[chosen & (out.input_ids != MASK) & (out.input_ids != ids)]
    assert not torch.isin(randomised, SPECIAL).any()  # random replacements are never special tokens
    assert torch.equal(out.input_ids[~chosen], ids[~chosen])


def test_a_short_batch_always_has_one_selected_token():
    ids = torch.tensor([[BOS, 10, EOS]])
    out = mask_for_mntp(ids, torch.ones_like(ids), SPECIAL, MASK, 1e-9, "mask", 50, torch.Generator().manual_seed(0))
    assert (out.labels != IGNORE).sum().item() == 1 and out.labels[0, 1].item() == 10


def test_the_token_masked_at_i_is_read_from_position_i_minus_1():
    # Hand-made logits over a 5-token vocabulary: position p puts logit 5 on token (p + 1) % 5
    # and 0 elsewhere. The label at position 3 is token 3: read from position 2 (the shift),
    # it scores 5 and the loss is log(1 + 4e^-5); read from position 3 it would be log(4 + e^5) - 0.
    vocab, length = 5, 6
    logits = torch.zeros(1, length, vocab)
    for p in range(length):
        logits[0, p, (p + 1) % vocab] = 5.0
    labels = torch.full((1, length), IGNORE)
    labels[0, 3] = 3
    assert mntp_loss(logits, labels).item() == pytest.approx(math.log(1 + 4 * math.exp(-5)), rel=1e-5)
    unshifted = F.cross_entropy(logits[0, 3:4], labels[0, 3:4]).item()
    assert unshifted == pytest.approx(math.log(4 + math.exp(5)) - 0.0, rel=1e-5)


def test_the_lm_head_on_selected_rows_equals_the_loss_on_full_logits():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16)
    head = torch.nn.Linear(16, 40, bias=False)
    ids = torch.randint(5, 40, (3, 7))
    ids[:, 0] = BOS
    out = mask_for_mntp(ids, torch.ones_like(ids), SPECIAL, MASK, 0.5, "bert", 40, torch.Generator().manual_seed(1))
    logits, targets = selected_logits(hidden, out.labels, head)
    assert len(targets) == (out.labels != IGNORE).sum()
    assert F.cross_entropy(logits, targets).item() == pytest.approx(mntp_loss(head(hidden), out.labels).item(),
                                                                     rel=1e-6)
