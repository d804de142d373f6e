"""``quarry eval``: every task of an examples split scored with mteb's evaluators.

    quarry eval --model models/cpu-minilm --model packaged:all-MiniLM-L6-v2 [--examples vital] [--split test]

Per model: the texts every task will ask for are embedded first, on the Ray actor pool and
into the model's embedding cache (a re-evaluation of the same model embeds nothing; the
teacher's cache is the one mining filled); then ``mteb.evaluate`` runs each task on those
vectors (``evaluation.encoder``). Results go to the terminal, to ``eval.json`` beside a
saved Quarry model, and to the append-only ``evals/<examples>`` dataset (view ``evals``).

Tested by tests/pipelines/evaluate/test_eval_ray.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

from evaluation.models import QUARRY, ModelRef, resolve_model
from evaluation.mteb_tasks import METRICS, TaskData, mteb_task
from miners.cache import EmbeddingCache
from miners.teacher import AUTO, PRECISIONS
from pipelines.evaluate.record import append_evals, write_eval_json
from pipelines.evaluate.results import EvalResult, ModelEval, Score
from pipelines.evaluate.task_data import load_task_data
from pipelines.runtime.encoding import DEFAULT_ENCODE_IN, check_encode_in
from storage import Catalog, ConfigError, DataRoot, InputError
from storage.names import DEFAULT_DATASET
from storage.packaged import is_packaged
from storage.published import fetch_dir, saved_model

log = logging.getLogger("quarry")

SPLITS = ("train", "dev", "test")


@dataclass
class EvalConfig:
    models: list[str]  # saved Quarry models (folder or run name), sentence-transformers folders/ids, packaged:
    examples: str = DEFAULT_DATASET
    examples_version: str | None = None  # default: the latest
    split: str = "test"
    tasks: list[str] = field(default_factory=list)  # default: every evaluable task
    batch_size: int = 64
    max_length: int | None = None  # default: each model's own
    precision: str = AUTO  # sentence-transformers models only, as --teacher-precision when mining
    query_prompt: str = ""  # sentence-transformers models only: prefix of query-side texts (the teacher mined bare)
    encoders: int | None = None  # encoder actors (default: one per GPU, else one)
    encode_in: str = DEFAULT_ENCODE_IN  # where texts are encoded (pipelines.runtime.encoding)
    max_batch_tokens: int | None = None  # padded tokens per forward pass (default: the device's)
    write: bool = True  # eval.json beside Quarry models and a new evals/<examples> version
    with_parents: bool = False  # also score each model's parent (lineage.json's init_from), right after it
    # Matryoshka: also score each model on the renormalised first N dimensions of its
    # vectors (no second encode: the full vectors are cut). Rows are named "<model>@<N>".
    dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models", "must name at least one model to evaluate")
        if self.split not in SPLITS:
            raise ConfigError("split", f"must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError("max_length", f"must be at least 8, got {self.max_length}")
        check_encode_in(self.encode_in)
        if self.precision not in (AUTO, *PRECISIONS):
            raise ConfigError("precision", f"must be one of {', '.join((AUTO, *PRECISIONS))}, got {self.precision!r}")
        if any(d < 1 for d in self.dims) or len(set(self.dims)) != len(self.dims):
            raise ConfigError("dims", f"must be distinct positive sizes, got {','.join(map(str, self.dims))}")


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
    from pipelines.runtime.encoding import embed_missing
    from pipelines.runtime.local_ray import ensure_ray
    from trainers.loss import prefix

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
    from pipelines.runtime.encoding import encoder_shape
    from pipelines.runtime.local_ray import ensure_ray

    models = with_parents(cfg.models, catalog.root) if cfg.with_parents else cfg.models
    refs = [model_ref(m, catalog.root, cfg.max_length, cfg.precision) for m in models]  # bad names fail before Ray
    ensure_ray()
    device = encoder_shape().device  # decides what auto precision means for sentence-transformers models
    refs = [r if r.kind == QUARRY else dataclasses.replace(r, resolved=r.resolved.on_device(cfg.precision, device))
            for r in refs]
    tasks, version = load_task_data(catalog, cfg.examples, cfg.examples_version, cfg.split, cfg.tasks)
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
        result.evals_version = append_evals(catalog, result, cfg.models, cfg.tasks)
    return result
