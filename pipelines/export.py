"""``quarry export``: examples + mined negatives -> packed training shards.

Each row is one training example: a query with its instruction, its positive, and k hard
negatives, plus the keys the loss uses to mask false negatives (text hashes, label ids).
Rows are packed into global batches:

- every global batch comes from one task, so in-batch negatives are meaningful;
- it carries ``in_batch``: True for retrieval, False for classification and clustering
  (NV-Embed stage 2: with few-class labels, other in-batch examples are often positives);
- it is cut evenly across ``workers`` (``worker`` column), ``global_batch / workers`` rows each;
- per task the examples are shuffled with the seed and cut into batches, the incomplete
  last batch is dropped (LLM2Vec), then the batches of all tasks are shuffled together.

Stage 1 uses retrieval tasks only; stage 2 all of them. The packing is computed in the
driver with pyarrow: per example it holds a few hundred bytes plus the texts, which fits
instruction-tuning sets of a few million examples.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.task_spec import CLASS_TYPES
from storage import Catalog, InputError, Manifest, validate_name

log = logging.getLogger("quarry")

SHARD_SCHEMA = pa.schema([
    ("batch_index", pa.int64()), ("position", pa.int32()), ("worker", pa.int32()), ("in_batch", pa.bool_()),
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("instruction", pa.string()),
    ("query", pa.string()), ("positive", pa.string()), ("negatives", pa.list_(pa.string())),
    ("pos_key", pa.int64()), ("neg_keys", pa.list_(pa.int64())), ("label_id", pa.int64()),
    ("neg_label_ids", pa.list_(pa.int64())),
])


@dataclass
class ExportConfig:
    name: str = "vital-stage1"
    examples: str = "vital"
    negatives: str | None = None  # default: the examples name
    stage: int = 1
    global_batch: int = 32
    workers: int = 2
    num_negatives: int = 7
    seed: int = 0
    split: str = "train"
    tasks: tuple[str, ...] = field(default_factory=tuple)  # default: every task the stage allows

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_name(self.examples)
        if self.stage not in (1, 2):
            raise InputError(f"--stage must be 1 or 2, got {self.stage}")
        if self.workers < 1 or self.global_batch < self.workers or self.global_batch % self.workers:
            raise InputError(f"--global-batch {self.global_batch} must be a positive multiple of --workers "
                             f"{self.workers}")
        if self.num_negatives < 1:
            raise InputError("--num-negatives must be at least 1")


def text_key(text: str) -> int:
    """64-bit key of a text: equal texts, equal keys (the loss masks them)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)


def _rng(seed: int, *parts) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def pack_batches(rows_by_task: dict[str, list[dict]], global_batch: int, workers: int, seed: int
                 ) -> tuple[list[dict], dict]:
    """Deterministic single-task global batches (pure; the packing tests call it directly)."""
    batches: list[tuple[str, list[dict]]] = []
    stats = {}
    for task in sorted(rows_by_task):
        rows = sorted(rows_by_task[task], key=lambda r: r["example_id"])
        order = _rng(seed, "task", task).permutation(len(rows))
        full = len(rows) // global_batch
        for b in range(full):
            batches.append((task, [rows[i] for i in order[b * global_batch:(b + 1) * global_batch]]))
        stats[task] = {"examples": len(rows), "batches": full, "dropped_incomplete": len(rows) - full * global_batch}
    out = []
    per_worker = global_batch // workers
    for batch_index, j in enumerate(_rng(seed, "batches").permutation(len(batches))):
        task, members = batches[j]
        for position, row in enumerate(members):
            out.append({**row, "batch_index": batch_index, "position": position, "worker": position // per_worker,
                        "in_batch": row["task_type"] == "retrieval"})
    return out, stats


def export_shards(cfg: ExportConfig, catalog: Catalog) -> tuple[Manifest, dict]:
    ex_m = catalog.manifest("examples", cfg.examples)
    neg_name = cfg.negatives or cfg.examples
    neg_m = catalog.manifest("negatives", neg_name)
    examples = catalog.read_table("examples", cfg.examples, ex_m.version)
    examples = examples.filter(pc.equal(examples.column("split"), cfg.split))
    allowed = ("retrieval",) if cfg.stage == 1 else ("retrieval",) + CLASS_TYPES
    types = dict(zip(examples.column("task").to_pylist(), examples.column("task_type").to_pylist()))
    tasks = list(cfg.tasks) or [t for t, ty in types.items() if ty in allowed]
    for t in tasks:
        if t not in types:
            raise InputError(f"examples/{cfg.examples} has no task {t!r} in split {cfg.split!r}")
        if types[t] not in allowed:
            raise InputError(f"task {t} is a {types[t]} task: stage {cfg.stage} takes {', '.join(allowed)} tasks")
    if not tasks:
        raise InputError(f"no {' or '.join(allowed)} tasks in examples/{cfg.examples} for stage {cfg.stage}")
    inputs = [ex_m.input_ref(), neg_m.input_ref()]
    doc_text: dict[str, str] = {}
    if any(types[t] == "retrieval" for t in tasks):
        corpus_name = ex_m.config.get("corpus")
        version = next((i.version for i in ex_m.inputs if i.kind == "corpus" and i.name == corpus_name), None)
        corpus_m = catalog.manifest("corpus", corpus_name, version)
        corpus = catalog.read_table("corpus", corpus_name, corpus_m.version, columns=["doc_id", "text"])
        doc_text = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))
        inputs.append(corpus_m.input_ref())
    negatives = catalog.read_table("negatives", neg_name, neg_m.version,
                                   columns=["example_id", "neg_text", "neg_label", "neg_rank"])
    negs: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
    for eid, text, label, rank in zip(*(negatives.column(c).to_pylist()
                                        for c in ("example_id", "neg_text", "neg_label", "neg_rank"))):
        negs[eid].append((rank, text, label))
    label_ids: dict[str, dict[str, int]] = defaultdict(dict)
    rows_by_task: dict[str, list[dict]] = defaultdict(list)
    short = defaultdict(int)
    for r in examples.to_pylist():
        if r["task"] not in tasks:
            continue
        chosen = sorted(negs.get(r["example_id"], []))[: cfg.num_negatives]
        if len(chosen) < cfg.num_negatives:
            short[r["task"]] += 1  # never padded: a short example is left out and counted
            continue
        positive = doc_text[r["positive_ids"][0]] if r["task_type"] == "retrieval" else r["positive"]
        vocab = label_ids[r["task"]]
        lid = lambda lab: -1 if lab is None else vocab.setdefault(lab, len(vocab))  # noqa: E731
        rows_by_task[r["task"]].append({
            "task": r["task"], "task_type": r["task_type"], "example_id": r["example_id"],
            "instruction": r["instruction"], "query": r["query"], "positive": positive,
            "negatives": [t for _, t, _ in chosen], "pos_key": text_key(positive),
            "neg_keys": [text_key(t) for _, t, _ in chosen],
            "label_id": lid(r["label"]) if r["task_type"] in CLASS_TYPES else -1,
            "neg_label_ids": [lid(lab) if r["task_type"] in CLASS_TYPES else -1 for _, _, lab in chosen]})
    rows, stats = pack_batches(rows_by_task, cfg.global_batch, cfg.workers, cfg.seed)
    for task in tasks:
        stats.setdefault(task, {"examples": 0, "batches": 0, "dropped_incomplete": 0})
        stats[task]["short_of_negatives"] = short[task]
    if not rows:
        raise InputError(f"no complete global batch of {cfg.global_batch} for stage {cfg.stage}: "
                         f"stats {stats}; lower --global-batch or mine more negatives")
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    config = {"stage": "export", **asdict(cfg), "batches": int(table.column("batch_index")[-1].as_py()) + 1}
    manifest = catalog.write_table("shards", cfg.name, table, config=config, inputs=inputs, stats=stats,
                                   skip_if_unchanged=True)
    return manifest, stats
