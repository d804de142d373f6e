"""The typed configuration of ``quarry mine`` and the plan it makes for each task.

Defaults live here and in the dataclasses it nests (``SelectionConfig``, ``IndexConfig``,
``TeacherSpec``); the command line reads them from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from miners.index import IndexConfig
from miners.select import SelectionConfig
from miners.teacher import TeacherSpec
from pipelines.runtime.encoding import DEFAULT_ENCODE_IN, check_encode_in
from storage import ConfigError, validate_name
from storage.names import DEFAULT_DATASET
from storage.schemas import CLASS_TYPES, RETRIEVAL

# Classification and clustering: the label decides what is a false negative (the same-class
# filter), and the positive is a random example of the class, so a positive-aware threshold
# would mostly discard good negatives (on the vital tasks it left about half the class
# queries short of negatives). Plain top-k by default (``class_selection`` changes it).
CLASS_STRATEGY = "topk"
CORPUS_POOL = "corpus"
BI_ENCODER, CROSS_ENCODER = "bi-encoder", "cross-encoder"
JUDGE_KINDS = (BI_ENCODER, CROSS_ENCODER)


@dataclass(frozen=True)
class JudgeSpec:
    """A second model that rescores the teacher's candidates (pipelines/mine/judge.py)."""

    model: str  # a sentence-transformers folder, hub id or packaged model; or a CrossEncoder
    kind: str = BI_ENCODER
    max_length: int | None = None  # None: the model's own
    batch_size: int = 32  # cross-encoder pairs per forward pass

    def __post_init__(self) -> None:
        if self.kind not in JUDGE_KINDS:
            raise ConfigError("kind", f"must be one of {', '.join(JUDGE_KINDS)}, got {self.kind!r}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("max_length", f"must be at least 1, got {self.max_length}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")


@dataclass
class MineConfig:
    examples: str = DEFAULT_DATASET
    examples_version: str | None = None
    tasks: tuple[str, ...] = ()  # empty: every retrieval, classification and clustering task
    name: str | None = None  # negatives dataset (default: the examples name)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # retrieval tasks
    # classification/clustering tasks: their positive is any example of the class, so the
    # confidence rule (a retrieval rule) is off
    class_selection: SelectionConfig = field(
        default_factory=lambda: SelectionConfig(strategy=CLASS_STRATEGY, confident_within=None))
    depth: int = 50  # teacher top-k searched per query
    # Candidates stored per query beyond depth (pipelines.mine.lists), so that a re-mine can
    # update a list in place when documents it held leave or change.
    list_extra: int = 16
    index: IndexConfig = field(default_factory=IndexConfig)
    batch_size: int = 64  # most texts per teacher forward pass
    max_batch_tokens: int | None = None  # padded tokens per pass; None: the device default, 0: off
    query_prompt: str = ""  # fixed prefix for queries, e.g. "query: " for E5
    task_instructions: bool = False  # prefix queries with their task instruction (e5-mistral style)
    encoders: int | None = None  # teacher actors (default: one per GPU, or one CPU actor)
    encode_in: str = DEFAULT_ENCODE_IN  # where missing texts are encoded (pipelines.runtime.encoding)
    chunk_rows: int = 2048  # queries per selection batch
    reuse: bool = True  # take over the negatives of queries a change cannot reach (pipelines.mine.reuse)
    judge: JudgeSpec | None = None  # rescores the teacher's candidates; the score rules read its scores

    def __post_init__(self) -> None:
        validate_name(self.examples)
        if self.name:
            validate_name(self.name)
        if self.list_extra < 0:
            raise ConfigError("list_extra", f"must be 0 or more, got {self.list_extra}")
        for name in ("depth", "batch_size", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 0:
            raise ConfigError("max_batch_tokens", f"must be 0 (off) or positive, got {self.max_batch_tokens}")
        if self.encoders is not None and self.encoders < 1:
            raise ConfigError("encoders", f"must be at least 1, got {self.encoders}")
        check_encode_in(self.encode_in)
        if self.class_selection.num_negatives != self.selection.num_negatives:
            raise ConfigError("class_selection.num_negatives",
                              f"must equal the retrieval tasks' ({self.selection.num_negatives}), got "
                              f"{self.class_selection.num_negatives}")
        if self.depth < self.selection.num_negatives:
            raise ConfigError("depth", f"must be at least num_negatives ({self.selection.num_negatives}), got {self.depth}")

    def selection_for(self, task_type: str) -> SelectionConfig:
        return self.class_selection if task_type in CLASS_TYPES else self.selection

    def query_string(self, instruction: str | None, query: str) -> str:
        """What the teacher encodes for a query: prompt, optional task instruction, text."""
        return self.query_prompt + ((instruction or "") if self.task_instructions else "") + query

    @property
    def output_name(self) -> str:
        return self.name or self.examples


@dataclass(frozen=True)
class TaskPlan:
    """How one task is mined, decided once in the driver."""

    task: str
    task_type: str
    pool: str  # the candidate pool searched: the corpus, or the class task's own examples
    selection: SelectionConfig

    @property
    def filters_same_class(self) -> bool:
        return self.task_type in CLASS_TYPES


def plan_task(cfg: MineConfig, task: str, task_type: str) -> TaskPlan:
    return TaskPlan(task=task, task_type=task_type, pool=CORPUS_POOL if task_type == RETRIEVAL else task,
                    selection=cfg.selection_for(task_type))


def describe_selection(plans: dict[str, TaskPlan]) -> str:
    """One line: which strategy each kind of task uses, and why class tasks differ."""
    parts = []
    for label, chosen in ((RETRIEVAL, [p for p in plans.values() if not p.filters_same_class]),
                          ("classification/clustering", [p for p in plans.values() if p.filters_same_class])):
        if not chosen:
            continue
        sel = chosen[0].selection
        margin = f" (margin {sel.effective_margin})" if sel.effective_margin is not None else ""
        if sel.conditioned_on_confidence:
            margin += f" where a positive ranks in the first {sel.confident_within}"
        if sel.max_positive_similarity is not None:
            margin += f", dropping candidates above {sel.max_positive_similarity} similarity to a positive"
        why = "; the same-class filter removes their false negatives" if chosen[0].filters_same_class else ""
        parts.append(f"{label} tasks {sel.strategy}{margin}{why}")
    sel = next(iter(plans.values())).selection
    return f"{'; '.join(parts)}; {sel.num_negatives} per query, {sel.sampling} sampling"

