"""``quarry export``: examples + mined negatives -> packed training shards.

Each row is one training example: a query with its instruction, its positive, and k hard
negatives, plus the keys the loss uses to mask false negatives (text hashes, label ids).
k = 0 gives in-batch negatives only (retrieval tasks; no negatives dataset is read).
Rows are packed into global batches:

- every global batch comes from one task, so in-batch negatives are meaningful;
- it carries ``in_batch``: True for retrieval, False for classification and clustering
  (NV-Embed stage 2: with few-class labels, other in-batch examples are often positives);
- it is cut evenly across ``workers`` (``worker`` column), ``global_batch / workers`` rows each;
- per task the examples are shuffled with the seed and cut into batches, the incomplete
  last batch is dropped (LLM2Vec), then the batches of all tasks are shuffled together.

NV-Embed training stage 1 uses retrieval tasks only; stage 2 all of them. The packing is computed in the
driver with pyarrow: per example it holds a few hundred bytes plus the texts, which fits
instruction-tuning sets of a few million examples.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.examples import choose_tasks, examples_corpus, task_types
from pipelines.task_types import CLASS_TYPES, RETRIEVAL, TRAINING_STAGE_TYPES, allows_in_batch_negatives
from storage import Catalog, InputError, Manifest, stable_rng, text_key, validate_name

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
    name: str | None = None  # shards dataset (default <examples>-stage<training_stage>)
    examples: str = "vital"
    negatives: str | None = None  # default: the examples name
    training_stage: int = 1  # NV-Embed stage: 1 retrieval only, 2 retrieval + classification + clustering
    global_batch: int = 32  # queries per global batch (one task each)
    workers: int = 2  # training workers the batches are cut for
    num_negatives: int = 7  # hard negatives per query; 0: in-batch negatives only (retrieval)
    seed: int = 0
    split: str = "train"
    tasks: tuple[str, ...] = field(default_factory=tuple)  # default: every task the stage allows

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = f"{self.examples}-stage{self.training_stage}"
        validate_name(self.name)
        validate_name(self.examples)
        if self.negatives is not None:
            validate_name(self.negatives)
        if self.training_stage not in TRAINING_STAGE_TYPES:
            raise InputError(f"--stage must be 1 or 2, got {self.training_stage}")
        if self.workers < 1 or self.global_batch < self.workers or self.global_batch % self.workers:
            raise InputError(f"--global-batch {self.global_batch} must be a positive multiple of --workers "
                             f"{self.workers}")
        if self.num_negatives < 0:
            raise InputError(f"--num-negatives must be 0 (in-batch negatives only) or more, got {self.num_negatives}")


@dataclass
class ExportResult:
    manifest: Manifest
    global_batch: int
    stats: dict[str, dict]  # task -> examples, batches, dropped_incomplete, short_of_negatives

    def summary(self) -> str:
        lines = [f"  {task}: {s['examples']} examples, {s['batches']} batches, {s['dropped_incomplete']} left out of "
                 f"the last incomplete batch, {s['short_of_negatives']} short of negatives"
                 for task, s in self.stats.items()]
        m = self.manifest
        return "\n".join(lines + [f"shards/{m.name}: {m.version}: {m.num_rows} rows in {m.config['batches']} "
                                  f"global batches of {self.global_batch}"])


def pack_batches(rows_by_task: dict[str, list[dict]], global_batch: int, workers: int, seed: int
                 ) -> tuple[list[dict], dict]:
    """Deterministic single-task global batches (pure; the packing tests call it directly)."""
    batches: list[tuple[str, list[dict]]] = []
    stats = {}
    for task in sorted(rows_by_task):
        rows = sorted(rows_by_task[task], key=lambda r: r["example_id"])
        order = stable_rng(seed, "task", task).permutation(len(rows))
        full = len(rows) // global_batch
        for b in range(full):
            batches.append((task, [rows[i] for i in order[b * global_batch:(b + 1) * global_batch]]))
        stats[task] = {"examples": len(rows), "batches": full, "dropped_incomplete": len(rows) - full * global_batch}
    out = []
    per_worker = global_batch // workers
    for batch_index, j in enumerate(stable_rng(seed, "batches").permutation(len(batches))):
        task, members = batches[j]
        for position, row in enumerate(members):
            out.append({**row, "batch_index": batch_index, "position": position, "worker": position // per_worker,
                        "in_batch": allows_in_batch_negatives(row["task_type"])})
    return out, stats


def export_shards(cfg: ExportConfig, catalog: Catalog) -> ExportResult:
    ex_m = catalog.manifest("examples", cfg.examples)
    examples = catalog.read_table("examples", cfg.examples, ex_m.version)
    examples = examples.filter(pc.equal(examples.column("split"), cfg.split))
    types = choose_tasks(task_types(examples), cfg.tasks, TRAINING_STAGE_TYPES[cfg.training_stage],
                         f"examples/{cfg.examples} (split {cfg.split})", f"stage {cfg.training_stage} takes")
    if cfg.num_negatives == 0:
        # Class tasks train without in-batch negatives (other examples may share the label),
        # so with no hard negatives their loss would have nothing to push away.
        no_contrast = sorted(t for t, tt in types.items() if not allows_in_batch_negatives(tt))
        if no_contrast:
            raise InputError(f"--num-negatives 0 leaves {', '.join(no_contrast)} with no negatives at all (class "
                             "tasks get no in-batch negatives): export retrieval tasks only (--stage 1, or --tasks)")
    inputs = [ex_m.input_ref()]
    doc_text: dict[str, str] = {}
    if RETRIEVAL in types.values():
        corpus_m = examples_corpus(catalog, ex_m)
        corpus = catalog.read_table("corpus", corpus_m.name, corpus_m.version, columns=["doc_id", "text"])
        doc_text = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))
        inputs.append(corpus_m.input_ref())
    negs: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
    if cfg.num_negatives:  # in-batch only needs no mined negatives
        neg_name = cfg.negatives or cfg.examples
        neg_m = catalog.manifest("negatives", neg_name)
        inputs.append(neg_m.input_ref())
        negatives = catalog.read_table("negatives", neg_name, neg_m.version,
                                       columns=["example_id", "neg_text", "neg_label", "neg_rank"])
        for eid, text, label, rank in zip(*(negatives.column(c).to_pylist()
                                            for c in ("example_id", "neg_text", "neg_label", "neg_rank"))):
            negs[eid].append((rank, text, label))
    label_ids: dict[str, dict[str, int]] = defaultdict(dict)
    rows_by_task: dict[str, list[dict]] = defaultdict(list)
    short = defaultdict(int)
    for r in examples.to_pylist():
        if r["task"] not in types:
            continue
        chosen = sorted(negs.get(r["example_id"], []))[: cfg.num_negatives]
        if len(chosen) < cfg.num_negatives:
            short[r["task"]] += 1  # never padded: a short example is left out and counted
            continue
        positive = doc_text[r["positive_ids"][0]] if r["task_type"] == RETRIEVAL else r["positive"]
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
    for task in types:
        stats.setdefault(task, {"examples": 0, "batches": 0, "dropped_incomplete": 0})
        stats[task]["short_of_negatives"] = short[task]
    if not rows:
        raise InputError(f"no complete global batch of {cfg.global_batch} for stage {cfg.training_stage}: "
                         f"stats {stats}; lower --global-batch or mine more negatives")
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    config = {"built_by": "quarry export", **asdict(cfg), "batches": int(table.column("batch_index")[-1].as_py()) + 1}
    manifest = catalog.write_table("shards", cfg.name, table, config=config, inputs=inputs, stats=stats,
                                   skip_if_unchanged=True)
    return ExportResult(manifest=manifest, global_batch=cfg.global_batch, stats=stats)
