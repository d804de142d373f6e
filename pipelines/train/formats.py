"""Mined examples in the layouts other trainers read (pure; tested directly by
``tests/pipelines/train/test_formats.py``).

sentence-transformers (its ``mine_hard_negatives`` output formats, read by
``SentenceTransformerTrainer`` and its losses):

| layout | columns |
|---|---|
| ``triplet`` | anchor, positive, negative: one row per negative |
| ``n-tuple`` | anchor, positive, negative_1 ... negative_n |
| ``labeled-list`` | anchor, documents (the positive, then the negatives), labels (1, then 0s) |

With scores, ``triplet`` and ``n-tuple`` gain ``scores`` (the teacher's score of the
positive, then of each negative) and ``labeled-list`` has ``scores`` instead of ``labels``.

FlagEmbedding and Tevatron: one JSON object per query, ``{"query", "pos": [...], "neg":
[...], "prompt"}``, with ``pos_scores`` and ``neg_scores`` when scores are asked for. Without
scores ``pos`` holds every positive of the query; with them, the positive the negatives were
chosen against (the one whose teacher score is known).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

FORMATS = ("quarry", "sentence-transformers", "flagembedding")
LAYOUTS = ("triplet", "n-tuple", "labeled-list")


@dataclass(frozen=True)
class MinedExample:
    task: str
    instruction: str  # the task's instruction, as the examples hold it (the query's prefix)
    query: str
    positive: str  # the positive the negatives were chosen against (its score is known)
    positive_score: float | None
    positives: tuple[str, ...]  # every positive, ``positive`` first
    negatives: tuple[str, ...]  # in teacher rank order
    negative_scores: tuple[float, ...]


def dataset_name(task: str) -> str:
    """A task's name as a ``datasets`` split name (word characters and dots only)."""
    return re.sub(r"[^\w.]", "_", task)


def sentence_transformers_table(examples: list[MinedExample], layout: str, with_scores: bool) -> pa.Table:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    columns: dict[str, list] = {"anchor": []}
    if layout == "triplet":
        columns.update(positive=[], negative=[])
        for e in examples:
            for text, score in zip(e.negatives, e.negative_scores):
                columns["anchor"].append(e.query)
                columns["positive"].append(e.positive)
                columns["negative"].append(text)
                if with_scores:
                    columns.setdefault("scores", []).append([e.positive_score, score])
    elif layout == "n-tuple":
        width = len(examples[0].negatives) if examples else 0
        columns["positive"] = [e.positive for e in examples]
        columns["anchor"] = [e.query for e in examples]
        for i in range(width):
            columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
        if with_scores:
            columns["scores"] = [[e.positive_score, *e.negative_scores] for e in examples]
    else:
        columns["anchor"] = [e.query for e in examples]
        columns["documents"] = [[e.positive, *e.negatives] for e in examples]
        key = "scores" if with_scores else "labels"
        columns[key] = [[e.positive_score, *e.negative_scores] if with_scores else [1] + [0] * len(e.negatives)
                        for e in examples]
    return pa.table(columns)


def flagembedding_line(e: MinedExample, with_scores: bool) -> dict:
    line = {"query": e.query, "pos": [e.positive] if with_scores else list(e.positives), "neg": list(e.negatives),
            "prompt": e.instruction}
    if with_scores:
        line["pos_scores"] = [e.positive_score]
        line["neg_scores"] = list(e.negative_scores)
    return line
