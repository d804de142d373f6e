"""``quarry eval``: every task of an examples split scored with mteb's evaluators.

    quarry eval --model models/cpu-minilm --model packaged:all-MiniLM-L6-v2 [--examples vital] [--split test]

Per model: the texts every task will ask for are embedded first, on the Ray actor pool and
into the model's embedding cache (a re-evaluation of the same model embeds nothing; the
teacher's cache is the one mining filled); then ``mteb.evaluate`` runs each task on those
vectors (``evaluation.encoder``). Results go to the terminal, to ``eval.json`` beside a
saved Quarry model, and to the append-only ``evals/<examples>`` dataset (view ``evals``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa

from evaluation.models import QUARRY, ModelRef, resolve_model
from evaluation.mteb_tasks import EVALUABLE_TYPES, METRICS, TaskData, mteb_task
from miners.cache import EmbeddingCache, EmbedStats
from miners.teacher import AUTO, PRECISIONS
from pipelines.embed_stage import check_encode_in
from pipelines.examples import choose_tasks, examples_corpus, task_types
from storage import Catalog, DataRoot, InputError, format_table
from storage.packaged import is_packaged
from storage.published import fetch_dir, saved_model
from storage.seeding import stable_unit

log = logging.getLogger("quarry")

EVALS_KIND = "evals"
EVAL_JSON = "eval.json"
SPLITS = ("train", "dev", "test")
EVALS_SCHEMA = pa.schema([
    ("model", pa.string()), ("model_kind", pa.string()), ("model_fingerprint", pa.string()), ("task", pa.string()),
    ("task_type", pa.string()), ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("examples", pa.string()), ("examples_version", pa.string()),
])
# mteb's classification protocol draws samples_per_label (8) examples per class from the
# train split in each of n_experiments (10) experiments. The train pool handed to mteb is a
# seeded sample of 8 x 10 per class, so that every text it can draw is embedded up front
# rather than the whole train split (8,087 extracts on the vital set).
CLASSIFICATION_POOL_PER_LABEL = 8 * 10


@dataclass
class EvalConfig:
    models: list[str]  # saved Quarry models (folder or run name), sentence-transformers folders/ids, packaged:
    examples: str = "vital"
    examples_version: str | None = None  # default: the latest
    split: str = "test"
    tasks: list[str] = field(default_factory=list)  # default: every evaluable task
    batch_size: int = 64
    max_length: int | None = None  # default: each model's own
    precision: str = AUTO  # sentence-transformers models only, as --teacher-precision when mining
    query_prompt: str = ""  # sentence-transformers models only: prefix of query-side texts (the teacher mined bare)
    encoders: int | None = None  # encoder actors (default: one per GPU, else one)
    encode_in: str = "auto"  # auto, driver or actors: where texts are encoded (pipelines.embed_stage)
    max_batch_tokens: int | None = None  # padded tokens per forward pass (default: the device's)
    write: bool = True  # eval.json beside Quarry models and a new evals/<examples> version
    with_parents: bool = False  # also score each model's parent (lineage.json's init_from), right after it
    # Matryoshka: also score each model on the renormalised first N dimensions of its
    # vectors (no second encode: the full vectors are cut). Rows are named "<model>@<N>".
    dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.models:
            raise InputError("--model: give at least one model to evaluate")
        if self.split not in SPLITS:
            raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise InputError(f"--max-length must be at least 8, got {self.max_length}")
        check_encode_in(self.encode_in)
        if self.precision not in (AUTO, *PRECISIONS):
            raise InputError(f"--precision must be one of {', '.join((AUTO, *PRECISIONS))}, got {self.precision!r}")
        if any(d < 1 for d in self.dims) or len(set(self.dims)) != len(self.dims):
            raise InputError(f"--dims must be distinct positive sizes, got {','.join(map(str, self.dims))}")


@dataclass(frozen=True)
class Score:
    task: str
    task_type: str
    metric: str
    value: float


@dataclass
class ModelEval:
    model: str
    kind: str
    fingerprint: str
    scores: list[Score]
    embed: EmbedStats
    dim: int | None = None  # the Matryoshka prefix scored; None: the full vectors

    def value(self, task: str, metric: str) -> float | None:
        return next((s.value for s in self.scores if s.task == task and s.metric == metric), None)

    def to_dict(self) -> dict:
        per_task: dict[str, dict] = {}
        for s in self.scores:
            per_task.setdefault(s.task, {"task_type": s.task_type})[s.metric] = s.value
        return {"model": self.model, "kind": self.kind, "fingerprint": self.fingerprint, "tasks": per_task}


@dataclass
class EvalResult:
    examples: str
    examples_version: str
    split: str
    models: list[ModelEval]
    evals_version: str | None = None

    def main_scores(self) -> list[tuple[str, str]]:
        """(task, main metric) in task order."""
        seen: dict[str, str] = {}
        for s in self.models[0].scores:
            seen.setdefault(s.task, METRICS[s.task_type][0])
        return list(seen.items())

    def table(self) -> str:
        """Models side by side; with two or more (and no Matryoshka prefixes), the last minus the first."""
        header = ["task", "metric", *[m.model for m in self.models]]
        diff = len(self.models) > 1 and all(m.dim is None for m in self.models)
        if diff:
            header.append("diff (last - first)")
        rows = []
        for s in self.models[0].scores:
            values = [m.value(s.task, s.metric) for m in self.models]
            row = [s.task, s.metric, *[_fmt(v) for v in values]]
            if diff:
                first, last = values[0], values[-1]
                row.append("" if first is None or last is None else f"{last - first:+.4f}")
            rows.append(row)
        return format_table(header, rows)

    def summary(self) -> str:
        where = f"examples/{self.examples} {self.examples_version}, {self.split} split"
        # A Matryoshka prefix reuses its model's vectors: only the full-vector rows embedded anything.
        embedded = "; ".join(f"{m.model}: {m.embed.summary()}" for m in self.models if m.dim is None)
        tail = f"\neval: results in evals/{self.examples} {self.evals_version} (view evals)" if self.evals_version else ""
        return f"eval: {where} ({embedded})\n{self.table()}{tail}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def load_task_data(cfg: EvalConfig, catalog: Catalog) -> tuple[list[TaskData], str]:
    """Every chosen task's evaluation data, and the examples version read."""
    manifest = catalog.manifest("examples", cfg.examples, cfg.examples_version)
    examples = catalog.read_table("examples", cfg.examples, manifest.version,
                                  columns=["task", "task_type", "example_id", "split", "instruction", "query",
                                           "positive_ids", "positive", "label", "score"])
    chosen = choose_tasks(task_types(examples), cfg.tasks, EVALUABLE_TYPES, f"examples/{cfg.examples}",
                          "quarry eval scores")
    corpus: dict[str, str] | None = None
    out = []
    rows_by_task: dict[str, list[dict]] = {}
    for row in examples.to_pylist():
        if row["task"] in chosen:
            rows_by_task.setdefault(row["task"], []).append(row)
    for task, task_type in chosen.items():
        rows = rows_by_task[task]
        scored = [r for r in rows if r["split"] == cfg.split]
        if not scored:
            if cfg.tasks:  # named by the user: say so
                raise InputError(f"task {task} has no examples in the {cfg.split} split of examples/{cfg.examples}")
            # Every task by default: a small build (--limit) can leave a task without one.
            log.warning("eval: leaving out %s: no examples in the %s split of examples/%s", task, cfg.split,
                        cfg.examples)
            continue
        data = TaskData(name=task, task_type=task_type, split=cfg.split, instruction=scored[0]["instruction"] or "")
        if task_type == "retrieval":
            if corpus is None:
                corpus_m = examples_corpus(catalog, manifest)
                table = catalog.read_table("corpus", corpus_m.name, corpus_m.version, columns=["doc_id", "text"])
                corpus = dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))
            data.corpus = corpus
            data.queries = {r["example_id"]: r["query"] for r in scored}
            data.qrels = {r["example_id"]: {p: 1 for p in r["positive_ids"]} for r in scored}
        elif task_type == "classification":
            if cfg.split == "train":
                raise InputError("classification fits its classifier on the train split: use --split dev or test")
            train = _classification_pool([r for r in rows if r["split"] == "train"], task)
            data.train_texts, data.train_labels = [r["query"] for r in train], [r["label"] for r in train]
            data.texts, data.labels = [r["query"] for r in scored], [r["label"] for r in scored]
        elif task_type == "clustering":
            data.texts, data.labels = [r["query"] for r in scored], [r["label"] for r in scored]
        else:  # sts
            data.pairs = [(r["query"], r["positive"]) for r in scored]
            data.scores = [float(r["score"]) for r in scored]
        out.append(data)
    if not out:
        raise InputError(f"examples/{cfg.examples} has no examples in the {cfg.split} split to score")
    return out, manifest.version


def _classification_pool(train: list[dict], task: str) -> list[dict]:
    """Up to CLASSIFICATION_POOL_PER_LABEL train examples per class, chosen by a seeded hash."""
    by_label: dict[str, list[dict]] = {}
    for r in sorted(train, key=lambda r: stable_unit("eval-train-pool", task, r["example_id"])):
        members = by_label.setdefault(r["label"], [])
        if len(members) < CLASSIFICATION_POOL_PER_LABEL:
            members.append(r)
    return [r for label in sorted(by_label) for r in by_label[label]]


def instructions_for(ref: ModelRef, tasks: list[TaskData], query_prompt: str) -> dict[str, str]:
    """What each task's query-side texts are prefixed with: a Quarry model gets its task
    instructions as in training; a sentence-transformers model is scored the way the teacher
    mined, bare or with ``--query-prompt``."""
    if ref.kind == QUARRY:
        return {t.name: t.instruction for t in tasks}
    return {t.name: query_prompt for t in tasks}


def evaluate_model(ref: ModelRef, tasks: list[TaskData], cfg: EvalConfig, catalog: Catalog,
                   examples_version: str) -> list[ModelEval]:
    """The model's scores on its full vectors, then on each prefix of ``cfg.dims``."""
    import mteb
    import torch

    from evaluation.encoder import LookupEncoder
    from pipelines.embed_stage import embed_missing
    from trainers.loss import prefix
    from pipelines.ray_runtime import ensure_ray

    instructions = instructions_for(ref, tasks, cfg.query_prompt)
    inputs: dict[str, tuple[str, str]] = {}
    for t in tasks:
        for text in t.query_texts():
            inputs[ref.key(instructions[t.name], text)] = (instructions[t.name], text)
        for text in t.document_texts():
            inputs.setdefault(ref.key("", text), ("", text))
    ensure_ray()
    cache = EmbeddingCache(catalog, ref.cache_name, dim=None, config=ref.provenance())
    log.info("eval: %s: %d texts to score %d task(s)", ref.label, len(inputs), len(tasks))
    stats = embed_missing(inputs, cache, ref, cfg.batch_size, cfg.encoders, cfg.max_batch_tokens, cfg.encode_in)
    keys = list(inputs)
    vectors = cache.load(keys)
    too_big = [d for d in cfg.dims if d > vectors.shape[1]]
    if too_big:
        raise InputError(f"--dims {','.join(map(str, too_big))}: {ref.label} makes {vectors.shape[1]}-dimension "
                         "vectors")
    rows = {k: i for i, k in enumerate(keys)}
    out = []
    for dim in (None, *cfg.dims):
        cut = vectors if dim is None else prefix(torch.from_numpy(vectors), dim).numpy()
        label = ref.label if dim is None else f"{ref.label}@{dim}"
        encoder = LookupEncoder(label, ref.fingerprint, cut.shape[1], cut, rows, ref.key, instructions)
        mteb_tasks = [mteb_task(t, examples_version) for t in tasks]
        log.info("eval: %s: running mteb on %s", label, ", ".join(t.name for t in tasks))
        results = mteb.evaluate(encoder, tasks=mteb_tasks, cache=None, show_progress_bar=False, raise_error=True)
        scores = []
        for t, result in zip(tasks, _in_order(results.task_results, tasks)):
            split_scores = result.scores[t.split][0]
            for metric in METRICS[t.task_type]:
                scores.append(Score(t.name, t.task_type, metric, float(split_scores[metric])))
        out.append(ModelEval(model=label, kind=ref.kind, fingerprint=ref.fingerprint, scores=scores, embed=stats,
                             dim=dim))
    return out


def _in_order(task_results, tasks: list[TaskData]):
    by_name = {r.task_name: r for r in task_results}
    return [by_name[t.name] for t in tasks]


def model_ref(name: str, root: DataRoot, max_length: int | None, precision: str = AUTO) -> ModelRef:
    """``name`` as ``resolve_model`` takes it, where a run name means ``<root>/models/<name>``
    (on an object-store root: copied to the local cache, and fetched by each encoder actor)."""
    if root.is_local:
        return resolve_model(name, root.path("models"), max_length, precision)
    saved = None if os.path.isdir(name) or is_packaged(name) else saved_model(root, name)
    if saved is None:
        return resolve_model(name, None, max_length, precision)
    ref = resolve_model(fetch_dir(root, saved), None, max_length, precision)
    return dataclasses.replace(ref, name=name, origin=(root.uri, saved)) if ref.kind == QUARRY else ref


def with_parents(models: list[str], root: DataRoot) -> list[str]:
    """Each model followed by its parent, when its lineage names one (a retrained model is
    judged against the model it started from, on the same split)."""
    from trainers.lineage import read_lineage

    out: list[str] = []
    for model in models:
        record = read_lineage(root, model)
        if record is None or not record.parent:
            raise InputError(f"--with-parent: {model} has no parent in its lineage (it was not trained with "
                             "--init-from; `quarry lineage` shows its record)")
        out += [m for m in (model, record.parent) if m not in out]
    return out


def evaluate(cfg: EvalConfig, catalog: Catalog) -> EvalResult:
    from pipelines.embed_stage import encoder_shape
    from pipelines.ray_runtime import ensure_ray

    models = with_parents(cfg.models, catalog.root) if cfg.with_parents else cfg.models
    refs = [model_ref(m, catalog.root, cfg.max_length, cfg.precision) for m in models]  # bad names fail before Ray
    ensure_ray()
    device = encoder_shape().device  # decides what auto precision means for sentence-transformers models
    refs = [r if r.kind == QUARRY else dataclasses.replace(r, resolved=r.resolved.on_device(cfg.precision, device))
            for r in refs]
    tasks, version = load_task_data(cfg, catalog)
    per_model = [evaluate_model(r, tasks, cfg, catalog, version) for r in refs]
    result = EvalResult(cfg.examples, version, cfg.split, [e for evals in per_model for e in evals])
    if cfg.write:
        for ref, evals in zip(refs, per_model):
            model_eval = evals[0]  # eval.json holds the full vectors' scores; the evals dataset every prefix's
            if ref.kind == QUARRY:
                # Beside the model where it is kept: on the data root for a run name there.
                at_root = ref.origin is not None
                write_eval_json(catalog.root if at_root else DataRoot.resolve("/"),
                                ref.origin[1] if at_root else ref.path, result, model_eval)
        result.evals_version = append_evals(catalog, result, cfg)
    return result


def write_eval_json(root: DataRoot, model_dir: str, result: EvalResult, model_eval: ModelEval) -> None:
    """``eval.json`` beside the model, whole or not at all (it is left out of the model's fingerprint)."""
    path = posixpath.join(model_dir, EVAL_JSON)
    previous = {}
    if root.exists(path):
        try:
            previous = json.loads(root.read_bytes(path))
        except (OSError, ValueError):
            previous = {}
    runs = previous.get("evaluations", []) if isinstance(previous, dict) else []
    key = (result.examples, result.examples_version, result.split)
    runs = [r for r in runs if (r.get("examples"), r.get("examples_version"), r.get("split")) != key]
    runs.append({"examples": result.examples, "examples_version": result.examples_version, "split": result.split,
                 **model_eval.to_dict()})
    root.write_bytes_atomic(path, json.dumps({"evaluations": runs}, indent=2).encode("utf-8"))


def append_evals(catalog: Catalog, result: EvalResult, cfg: EvalConfig) -> str:
    """A new version of ``evals/<examples>``: the previous rows (by reference) plus these."""
    rows = [{"model": m.model, "model_kind": m.kind, "model_fingerprint": m.fingerprint, "task": s.task,
             "task_type": s.task_type, "split": result.split, "metric": s.metric, "value": s.value,
             "examples": result.examples, "examples_version": result.examples_version}
            for m in result.models for s in m.scores]
    table = pa.Table.from_pylist(rows, schema=EVALS_SCHEMA)
    latest = catalog.latest(EVALS_KIND, cfg.examples)
    previous = catalog.manifest(EVALS_KIND, cfg.examples, latest) if latest else None
    with catalog.writer(EVALS_KIND, cfg.examples) as writer:
        writer.write_table(table)
        examples = catalog.manifest("examples", result.examples, result.examples_version)
        manifest = writer.commit(config={"models": list(cfg.models), "split": cfg.split, "tasks": list(cfg.tasks)},
                                 inputs=[examples.input_ref()],
                                 carry=[(previous.version, f) for f in previous.files] if previous else [])
    return manifest.version
