"""``quarry export``: examples + mined negatives -> packed training shards
(``trainers.shards`` says what a shard row holds and how rows are packed).

k = 0 negatives gives in-batch negatives only (retrieval tasks; no negatives dataset is
read). NV-Embed training stage 1 uses retrieval tasks only; stage 2 all of them. The
packing is computed in the driver with pyarrow: per example it holds a few hundred bytes
plus the texts, which fits instruction-tuning sets of a few million examples.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.inputs import choose_tasks, examples_corpus, tasks_in
from pipelines.train.formats import FORMATS, LAYOUTS
from storage import Catalog, ConfigError, InputError, InputRef, Manifest, validate_name
from storage.names import DEFAULT_DATASET
from storage.schemas import CLASS_TYPES, RETRIEVAL, TRAINING_STAGE_TYPES, allows_in_batch_negatives
from trainers.shards import NO_LABEL, SHARD_SCHEMA, ShardExample, TaskPacking, pack_batches

log = logging.getLogger("quarry")


@dataclass
class ExportConfig:
    name: str | None = None  # shards dataset (default <examples>-stage<training_stage>)
    examples: str = DEFAULT_DATASET
    negatives: str | None = None  # default: the examples name
    training_stage: int = 1  # NV-Embed stage: 1 retrieval only, 2 retrieval + classification + clustering
    global_batch: int = 32  # queries per global batch (one task each)
    workers: int = 2  # training workers the batches are cut for
    num_negatives: int = 7  # hard negatives per query; 0: in-batch negatives only (retrieval)
    seed: int = 0
    split: str = "train"
    tasks: tuple[str, ...] = field(default_factory=tuple)  # default: every task the stage allows
    format: str = "quarry"  # quarry: packed shards; or another trainer's layout (pipelines.train.formats)
    layout: str = "n-tuple"  # sentence-transformers: triplet, n-tuple or labeled-list
    with_scores: bool = False  # the other trainers' formats: the teacher's scores beside the texts

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError("layout", f"must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.name is None:
            self.name = (f"{self.examples}-stage{self.training_stage}" if self.format == "quarry"
                         else f"{self.examples}-{self.format}")
        validate_name(self.name)
        validate_name(self.examples)
        if self.negatives is not None:
            validate_name(self.negatives)
        if self.training_stage not in TRAINING_STAGE_TYPES:
            raise ConfigError("training_stage", f"must be 1 or 2, got {self.training_stage}")
        if self.workers < 1:
            raise ConfigError("workers", f"must be at least 1, got {self.workers}")
        if self.global_batch < self.workers or self.global_batch % self.workers:
            raise ConfigError("global_batch", f"must be a positive multiple of workers ({self.workers}), "
                                              f"got {self.global_batch}")
        if self.num_negatives < 0:
            raise ConfigError("num_negatives", f"must be 0 (in-batch negatives only) or more, got {self.num_negatives}")
        if self.format != "quarry" and self.num_negatives < 1:
            raise ConfigError("num_negatives", f"must be at least 1 for the {self.format} format, got 0")


@dataclass
class ExportResult:
    manifest: Manifest
    global_batch: int
    tasks: dict[str, TaskPacking]

    @property
    def trained_tasks(self) -> list[str]:
        """The tasks with at least one global batch in the shards."""
        return [task for task, packing in self.tasks.items() if packing.batches]

    def summary(self) -> str:
        lines = [f"  {task}: {packing.describe()}" for task, packing in self.tasks.items()]
        m = self.manifest
        return "\n".join(lines + [f"shards/{m.name}: {m.version}: {m.num_rows} rows in {m.config['batches']} "
                                  f"global batches of {self.global_batch}"])


Negative = tuple[int, str, str | None]  # (teacher rank, text, label)


def export(cfg: ExportConfig, catalog: Catalog):
    """``quarry export``: Quarry's shards, or another trainer's format (``pipelines.train.export_formats``)."""
    if cfg.format == "quarry":
        return export_shards(cfg, catalog)
    from pipelines.train.export_formats import export_for_trainers

    return export_for_trainers(cfg, catalog)


def export_shards(cfg: ExportConfig, catalog: Catalog) -> ExportResult:
    ex_m = catalog.manifest("examples", cfg.examples)
    examples = catalog.read_table("examples", cfg.examples, ex_m.version)
    examples = examples.filter(pc.equal(examples.column("split"), cfg.split))
    types = choose_tasks(tasks_in(examples), cfg.tasks, TRAINING_STAGE_TYPES[cfg.training_stage],
                         f"examples/{cfg.examples} (split {cfg.split})", f"stage {cfg.training_stage} takes")
    _check_contrast(cfg, types)
    inputs = [ex_m.input_ref()]
    doc_text = _corpus_texts(catalog, ex_m, inputs) if RETRIEVAL in types.values() else {}
    negatives = _negatives_by_example(catalog, cfg, inputs) if cfg.num_negatives else {}
    rows_by_task, short = _examples_by_task(examples, types, doc_text, negatives, cfg.num_negatives)
    rows, packing = pack_batches(rows_by_task, cfg.global_batch, cfg.workers, cfg.seed)
    for task in types:
        packing.setdefault(task, TaskPacking()).short_of_negatives = short[task]
    if not rows:
        raise InputError(f"no complete global batch of {cfg.global_batch} for stage {cfg.training_stage}: "
                         f"{ {t: asdict(p) for t, p in packing.items()} }; lower --global-batch or mine more "
                         "negatives")
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    config = {"built_by": "quarry export", **asdict(cfg), "batches": int(table.column("batch_index")[-1].as_py()) + 1}
    manifest = catalog.write_table("shards", cfg.name, table, config=config, inputs=inputs,
                                   stats={t: asdict(p) for t, p in packing.items()}, skip_if_unchanged=True)
    return ExportResult(manifest=manifest, global_batch=cfg.global_batch, tasks=packing)


def _check_contrast(cfg: ExportConfig, types: dict[str, str]) -> None:
    """Class tasks train without in-batch negatives (other examples may share the label),
    so with no hard negatives their loss would have nothing to push away."""
    if cfg.num_negatives:
        return
    no_contrast = sorted(t for t, tt in types.items() if not allows_in_batch_negatives(tt))
    if no_contrast:
        raise InputError(f"--num-negatives 0 leaves {', '.join(no_contrast)} with no negatives at all (class "
                         "tasks get no in-batch negatives): export retrieval tasks only (--stage 1, or --tasks)")


def _corpus_texts(catalog: Catalog, examples: Manifest, inputs: list[InputRef]) -> dict[str, str]:
    """doc_id -> text of the corpus the retrieval positives point into."""
    corpus_m = examples_corpus(catalog, examples)
    corpus = catalog.read_table("corpus", corpus_m.name, corpus_m.version, columns=["doc_id", "text"])
    inputs.append(corpus_m.input_ref())
    return dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))


def _negatives_by_example(catalog: Catalog, cfg: ExportConfig, inputs: list[InputRef]) -> dict[str, list[Negative]]:
    name = cfg.negatives or cfg.examples
    m = catalog.manifest("negatives", name)
    inputs.append(m.input_ref())
    table = catalog.read_table("negatives", name, m.version,
                               columns=["example_id", "neg_text", "neg_label", "neg_rank"])
    out: dict[str, list[Negative]] = defaultdict(list)
    for eid, text, label, rank in zip(*(table.column(c).to_pylist()
                                        for c in ("example_id", "neg_text", "neg_label", "neg_rank"))):
        out[eid].append((rank, text, label))
    return out


def _examples_by_task(examples: pa.Table, types: dict[str, str], doc_text: dict[str, str],
                      negatives: dict[str, list[Negative]], k: int) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Shard rows per task, each with its best ``k`` negatives; and per task the examples
    left out for having fewer (never padded)."""
    label_ids: dict[str, dict[str, int]] = defaultdict(dict)
    rows_by_task: dict[str, list[dict]] = defaultdict(list)
    short: dict[str, int] = defaultdict(int)
    for r in examples.to_pylist():
        if r["task"] not in types:
            continue
        chosen = sorted(negatives.get(r["example_id"], []))[:k]
        if len(chosen) < k:
            short[r["task"]] += 1
            continue
        is_class = r["task_type"] in CLASS_TYPES
        vocab = label_ids[r["task"]]

        def label_id(label: str | None) -> int:
            return NO_LABEL if label is None or not is_class else vocab.setdefault(label, len(vocab))

        positive = doc_text[r["positive_ids"][0]] if r["task_type"] == RETRIEVAL else r["positive"]
        example = ShardExample(task=r["task"], task_type=r["task_type"], example_id=r["example_id"],
                               instruction=r["instruction"], query=r["query"], positive=positive,
                               negatives=tuple(t for _, t, _ in chosen), label_id=label_id(r["label"]),
                               neg_label_ids=tuple(label_id(lab) for _, _, lab in chosen))
        rows_by_task[r["task"]].append(example.row())
    return rows_by_task, short
