"""Contrastive loss: InfoNCE over cosine similarity, single-process and gathered.

``loss_from_embeddings`` does the maths on embeddings only (tested without a model). For
query i the candidates are its positive, its hard negatives and, when the batch allows
in-batch negatives, every other query's positive and negatives. Candidates known to be
positives of the query are masked out of the denominator: the same text as its positive
(equal ``doc_keys``) and, in class tasks, the same label (equal ``labels``).

Matryoshka (``dims``): the same loss on each L2-renormalised prefix of the embeddings,
weighted and summed. SimCSE (``simcse_loss``) is the in-batch case with no hard negatives:
the second dropout view of a text is its positive, every other text's second view a
negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss_from_embeddings(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float = 0.02,
                         in_batch: bool = True, pos_keys: torch.Tensor | None = None,
                         neg_keys: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                         neg_labels: torch.Tensor | None = None, query_rows: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Mean InfoNCE over the queries in ``query_rows`` (default all).

    q, pos: (B, D); neg: (B, K, D), all L2-normalised. keys: int64 text hashes, (B,) and
    (B, K); labels: int64 label ids or -1, (B,) and (B, K). ``query_rows`` selects which
    queries this process scores (its own, after a gather) against all B.
    """
    b, k, d = neg.shape
    rows = torch.arange(b, device=q.device) if query_rows is None else query_rows
    qs = q[rows]  # (R, D)
    if in_batch:
        docs = torch.cat([pos, neg.reshape(b * k, d)])  # (B + B*K, D): all positives, then all negatives
        scores = qs @ docs.T / temperature  # (R, B + B*K)
        target = rows  # the query's own positive sits at its row index
        if pos_keys is not None:
            doc_keys = torch.cat([pos_keys, neg_keys.reshape(-1)])
            same_text = doc_keys.unsqueeze(0) == pos_keys[rows].unsqueeze(1)  # (R, B + B*K)
        else:
            same_text = torch.zeros_like(scores, dtype=torch.bool)
        if labels is not None:
            doc_labels = torch.cat([labels, neg_labels.reshape(-1)])
            same_label = (doc_labels.unsqueeze(0) == labels[rows].unsqueeze(1)) & (labels[rows] >= 0).unsqueeze(1)
        else:
            same_label = torch.zeros_like(same_text)
        masked = same_text | same_label
        masked[torch.arange(len(rows), device=q.device), target] = False  # never mask the true positive
    else:
        docs = torch.cat([pos[rows].unsqueeze(1), neg[rows]], dim=1)  # (R, 1 + K, D)
        scores = torch.einsum("rd,rcd->rc", qs, docs) / temperature  # (R, 1 + K)
        target = torch.zeros(len(rows), dtype=torch.long, device=q.device)
        masked = torch.zeros_like(scores, dtype=torch.bool)
        if pos_keys is not None:
            masked[:, 1:] |= neg_keys[rows] == pos_keys[rows].unsqueeze(1)
        if labels is not None:
            masked[:, 1:] |= (neg_labels[rows] == labels[rows].unsqueeze(1)) & (labels[rows] >= 0).unsqueeze(1)
    scores = scores.masked_fill(masked, float("-inf"))
    return F.cross_entropy(scores, target)


Dims = tuple[tuple[int, float], ...]  # (prefix size, weight) pairs: TrainConfig.matryoshka


def prefix(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` coordinates of each embedding, L2-renormalised (a Matryoshka embedding)."""
    return F.normalize(x[..., :dim], dim=-1)


def gathered_loss(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, in_batch: bool, temperature: float,
                  pos_keys: torch.Tensor, neg_keys: torch.Tensor, labels: torch.Tensor, neg_labels: torch.Tensor,
                  dims: Dims = ()) -> torch.Tensor:
    """The loss of this worker's queries against the candidates of every worker.

    Embeddings are gathered with gradients; with DDP averaging the parameter gradients,
    the result equals the single-process gradient of the global batch's mean loss
    (tests/trainers/test_loss.py checks it on two processes). ``dims``: the weighted sum of
    the loss over those prefixes (gathered once, then cut) instead of the full embedding's.
    """
    import torch.distributed as dist

    rows = None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        world, rank = dist.get_world_size(), dist.get_rank()
        cat = lambda t: torch.cat(all_gather(t))  # noqa: E731 (gradients flow back to each owner)
        plain = lambda t: torch.cat([x for x in _gather_plain(t, world)])  # noqa: E731
        b = q.shape[0]
        rows = torch.arange(rank * b, (rank + 1) * b, device=q.device)
        q, pos, neg = cat(q), cat(pos), cat(neg)
        pos_keys, neg_keys, labels, neg_labels = plain(pos_keys), plain(neg_keys), plain(labels), plain(neg_labels)
    if not dims:
        return loss_from_embeddings(q, pos, neg, temperature, in_batch, pos_keys, neg_keys, labels, neg_labels,
                                    query_rows=rows)
    return sum(weight * loss_from_embeddings(prefix(q, d), prefix(pos, d), prefix(neg, d), temperature, in_batch,
                                             pos_keys, neg_keys, labels, neg_labels, query_rows=rows)
               for d, weight in dims)


def simcse_loss(view_a: torch.Tensor, view_b: torch.Tensor, temperature: float, keys: torch.Tensor,
                dims: Dims = ()) -> torch.Tensor:
    """Unsupervised SimCSE over the global batch: text i's two dropout views are each other's
    positive, the second views of every other text (on every worker) its negatives. ``keys``:
    (B,) text hashes, so a text that occurs twice in a batch is never its own negative."""
    b, d = view_a.shape
    no_negatives = view_a.new_zeros((b, 0, d))
    no_keys = keys.new_zeros((b, 0))
    no_labels = torch.full_like(keys, -1)
    return gathered_loss(view_a, view_b, no_negatives, True, temperature, keys, no_keys, no_labels, no_keys, dims)


def _gather_plain(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    import torch.distributed as dist

    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t.contiguous())
    return out
