import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainers.loss import gathered_loss, loss_from_embeddings, prefix, simcse_loss


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_hand_computed_value_without_in_batch():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.6, 0.8]])
    neg = torch.tensor([[[0.0, 1.0]]])
    t = 0.5
    expected = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0 / t)))
    got = loss_from_embeddings(q, pos, neg, temperature=t, in_batch=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_value_with_in_batch():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[[0.0, -1.0]], [[-1.0, 0.0]]])
    t = 1.0
    # query 0 scores: pos0 1, pos1 0, neg0 0, neg1 -1 ; query 1: pos0 0, pos1 1, neg0 -1, neg1 0
    denom = math.exp(1) + math.exp(0) + math.exp(0) + math.exp(-1)
    expected = -math.log(math.exp(1) / denom)
    assert loss_from_embeddings(q, pos, neg, t, in_batch=True).item() == pytest.approx(expected, rel=1e-6)


def test_no_hard_negatives_is_plain_in_batch_infonce():
    """k = 0 (``quarry export --num-negatives 0``): each query against every positive of the batch."""
    q, pos = _unit(4, 8, seed=1), _unit(4, 8, seed=2)
    expected = F.cross_entropy(q @ pos.T / 0.05, torch.arange(4))
    got = loss_from_embeddings(q, pos, torch.empty(4, 0, 8), 0.05, in_batch=True,
                               pos_keys=torch.arange(4), neg_keys=torch.empty(4, 0, dtype=torch.long))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_known_positives_are_masked_out_of_the_denominator():
    q, pos, neg = _unit(3, 8), _unit(3, 8, seed=1), _unit(3, 2, 8, seed=2)
    keys = torch.tensor([10, 11, 12])
    neg_keys = torch.tensor([[1, 2], [3, 4], [5, 6]])
    base = loss_from_embeddings(q, pos, neg, 0.05, True, keys, neg_keys)
    same = neg_keys.clone()
    same[0, 1] = 10  # query 0's second negative is its positive's text
    masked = loss_from_embeddings(q, pos, neg, 0.05, True, keys, same)
    # Equivalent: the same loss with that candidate pushed to -inf by hand.
    docs = torch.cat([pos, neg.reshape(6, 8)])
    scores = q @ docs.T / 0.05
    scores[0, 3 + 1] = float("-inf")
    assert masked.item() == pytest.approx(F.cross_entropy(scores, torch.arange(3)).item(), rel=1e-6)
    assert masked.item() != pytest.approx(base.item())
    labels = torch.tensor([0, 0, 1])  # class task: query 1's positive is a true positive of query 0 too
    neg_labels = torch.tensor([[1, 1], [1, 1], [0, 0]])
    scores = q @ docs.T / 0.05
    for row, col in [(0, 1), (1, 0), (2, 3 + 4), (2, 3 + 5)]:
        scores[row, col] = float("-inf")
    expected = F.cross_entropy(scores, torch.arange(3))
    got = loss_from_embeddings(q, pos, neg, 0.05, True, None, None, labels, neg_labels)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIMS = ((4, 0.5), (16, 1.0))  # a Matryoshka pair: a 4-dimension prefix and the full 16


def _reference(q, pos, neg, in_batch, dims):
    """The single-process loss of the whole batch, Matryoshka prefixes summed by hand."""
    args = (torch.arange(8), torch.arange(100, 124).reshape(8, 3), torch.full((8,), -1), torch.full((8, 3), -1))
    if not dims:
        return loss_from_embeddings(q, pos, neg, 0.05, in_batch, *args)
    return sum(w * loss_from_embeddings(F.normalize(q[:, :d], dim=-1), F.normalize(pos[:, :d], dim=-1),
                                        F.normalize(neg[:, :, :d], dim=-1), 0.05, in_batch, *args) for d, w in dims)


def _worker(rank, world, port, out_dir, in_batch, dims=()):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    q, pos, neg = _unit(8, 16), _unit(8, 16, seed=1), _unit(8, 3, 16, seed=2)
    keys, neg_keys = torch.arange(8), torch.arange(100, 124).reshape(8, 3)
    labels, neg_labels = torch.full((8,), -1), torch.full((8, 3), -1)
    b = 8 // world
    sl = slice(rank * b, (rank + 1) * b)
    mine = [t[sl].clone().requires_grad_() for t in (q, pos, neg)]
    loss = gathered_loss(*mine, in_batch, 0.05, keys[sl], neg_keys[sl], labels[sl], neg_labels[sl], dims)
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": [t.grad / world for t in mine]}, os.path.join(out_dir, f"{rank}.pt"))
    dist.barrier()  # neither rank tears down while the other still talks to it
    dist.destroy_process_group()
    # Leave without running C++ static destructors: a gloo thread torn down at interpreter
    # exit sometimes aborts the process ("terminate called without an active exception")
    # after the results above are safely written.
    os._exit(0)


@pytest.mark.integration  # two processes
@pytest.mark.parametrize("in_batch,dims", [(True, ()), (False, ()), (True, DIMS)], ids=["in-batch", "hard-only",
                                                                                      "matryoshka"])
def test_two_process_gathered_loss_equals_single_process_loss(tmp_path, in_batch, dims):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), in_batch, dims), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    q, pos, neg = (t.clone().requires_grad_() for t in (_unit(8, 16), _unit(8, 16, seed=1), _unit(8, 3, 16, seed=2)))
    single = _reference(q, pos, neg, in_batch, dims)
    single.backward()
    assert torch.stack([p["loss"] for p in parts]).mean().item() == pytest.approx(single.item(), rel=1e-5)
    for i, full in enumerate((q.grad, pos.grad, neg.grad)):
        distributed = torch.cat([p["grads"][i] for p in parts])
        assert torch.allclose(distributed, full, atol=1e-6), f"gradient {i} differs"


def test_matryoshka_sums_the_weighted_loss_of_each_renormalised_prefix():
    q, pos, neg = _unit(8, 16), _unit(8, 16, seed=1), _unit(8, 3, 16, seed=2)
    keys, neg_keys = torch.arange(8), torch.arange(100, 124).reshape(8, 3)
    labels, neg_labels = torch.full((8,), -1), torch.full((8, 3), -1)
    got = gathered_loss(q, pos, neg, True, 0.05, keys, neg_keys, labels, neg_labels, DIMS)
    assert got.item() == pytest.approx(_reference(q, pos, neg, True, DIMS).item(), rel=1e-6)
    full = gathered_loss(q, pos, neg, True, 0.05, keys, neg_keys, labels, neg_labels)
    assert got.item() != pytest.approx(full.item(), rel=1e-3)  # the prefix term is really there
    small = prefix(q, 4)
    assert torch.allclose(small.norm(dim=-1), torch.ones(8)) and torch.allclose(small * q[:, :4].norm(dim=-1,
                                                                                                     keepdim=True),
                                                                                q[:, :4], atol=1e-6)


def test_simcse_with_identical_views_equals_the_closed_form():
    # Dropout off: both views are the same vector, so text i scores 1/t against its own
    # second view and a_i . a_j / t against every other text's.
    a = _unit(6, 8, seed=3)
    t = 0.5
    sims = (a @ a.T).double() / t
    expected = (-(sims.diag() - torch.logsumexp(sims, dim=1))).mean().item()
    got = simcse_loss(a, a.clone(), t, torch.arange(6))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_simcse_pairs_each_text_with_its_own_second_view():
    a = _unit(4, 8, seed=4)
    b = a + 0.01 * _unit(4, 8, seed=5)  # each second view close to its own first view
    aligned = simcse_loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1), 0.05, torch.arange(4))
    shuffled = simcse_loss(F.normalize(a, dim=-1), F.normalize(b[[1, 2, 3, 0]], dim=-1), 0.05, torch.arange(4))
    assert aligned.item() < 0.01 < shuffled.item()


def test_simcse_never_counts_a_repeated_text_as_its_own_negative():
    a = _unit(3, 8, seed=6)
    a = torch.cat([a, a[:1]])  # text 0 twice in the batch
    keys = torch.tensor([10, 11, 12, 10])
    masked = simcse_loss(a, a.clone(), 0.05, keys)
    unmasked = simcse_loss(a, a.clone(), 0.05, torch.arange(4))
    assert masked.item() < unmasked.item()
