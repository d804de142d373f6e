"""Task specs: what ``quarry build tasks --spec FILE.yaml`` builds.

A spec names the ``examples`` dataset to build and a list of tasks. Each task has a
source, a column mapping, a type and an instruction::

    name: vital                 # examples dataset name
    corpus: vital               # corpus that retrieval positives point into
    seed: 0                     # split assignment and class pairing
    splits: {train: 0.9, dev: 0.05, test: 0.05}
    tasks:
      - name: vital-desc2article
        type: retrieval
        source: {corpus: vital}           # or {path: f.jsonl} or {hf: name, config: c, split: s}
        columns: {query: description, positive_ids: doc_id, id: doc_id}
        instruction: Given a short description, retrieve the Wikipedia article it describes

A mapped value is a column name, or a template such as ``"{title}: {description}"``.
Errors name the spec file and the field (``vital.yaml: tasks[2].type: ...``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from storage import InputError, first_line, validate_name
from storage.schemas import CLASS_TYPES, CLASSIFICATION, CLUSTERING, PAIR, RETRIEVAL, STS, TASK_TYPES

# Each task type's mapped columns: (required, optional). A retrieval task names its
# positives one way: ``positive_ids`` (ids of the corpus), ``positive`` (the positive's
# text: a text pair), or a source with qrels (``qrels`` files, or a ``beir`` folder).
TASK_COLUMNS = {
    RETRIEVAL: (("query",), ("positive_ids", "positive", "id")),
    CLASSIFICATION: (("text", "label"), ("id",)),
    CLUSTERING: (("text", "label"), ("id",)),
    STS: (("text1", "text2", "score"), ("id",)),
    PAIR: (("text1", "text2", "label"), ("id",)),
}
DEFAULT_TEMPLATE = "Instruct: {instruction}\nQuery: "
DEFAULT_SPLITS = {"train": 0.9, "dev": 0.05, "test": 0.05}  # in this order: see tasks.assign_split
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# How a retrieval task's positive_ids name documents: the corpus's doc_ids, the user's own
# ids (the corpus's source_id), or whichever of the two the ids match (auto).
POSITIVE_ID_KINDS = ("auto", "doc_ids", "source_ids")
# A BEIR folder's queries file and qrels folder, and the columns its queries map by default.
BEIR_QUERIES, BEIR_QRELS = "queries.jsonl", "qrels"
BEIR_COLUMNS = {"query": "text", "id": "_id"}


@dataclass(frozen=True)
class TaskSource:
    corpus: str | None = None
    version: str | None = None
    path: tuple[str, ...] = ()
    format: str | None = None
    hf: str | None = None
    hf_config: str | None = None
    split: str = "train"
    qrels: tuple[str, ...] = ()  # retrieval: TSV judgements of the queries in ``path``
    beir: str | None = None  # retrieval: a BEIR folder (queries.jsonl and qrels/<split>.tsv)

    def describe(self) -> str:
        if self.corpus:
            return f"corpus/{self.corpus}"
        if self.hf:
            return f"hf:{self.hf}"
        if self.beir:
            return f"beir:{self.beir}"
        return ",".join(self.path) + (f" with qrels {','.join(self.qrels)}" if self.qrels else "")

    @property
    def judged(self) -> bool:
        """Whether the task's positives come from qrels files."""
        return bool(self.qrels or self.beir)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: str
    source: TaskSource
    columns: dict[str, str]
    instruction: str = ""
    exclude_labels: tuple[str, ...] = ()
    positives: str = "auto"  # retrieval: what positive_ids (or qrels) name, one of POSITIVE_ID_KINDS

    @property
    def is_pairs(self) -> bool:
        """A retrieval task of (query, positive text) pairs: the positives are documents too."""
        return self.type == RETRIEVAL and "positive" in self.columns

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads (through templates too)."""
        cols: set[str] = set()
        for value in self.columns.values():
            cols.update(template_fields(value))
        return sorted(cols)


@dataclass(frozen=True)
class TaskSetSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    corpus: str | None = None
    seed: int = 0
    splits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    instruction_template: str = DEFAULT_TEMPLATE
    path: str = ""

    def format_instruction(self, instruction: str) -> str:
        return self.instruction_template.format(instruction=instruction) if instruction else ""


def spec_from_dict(d: dict[str, Any]) -> TaskSetSpec:
    """The inverse of ``dataclasses.asdict`` of a spec: how an examples manifest records it."""
    tasks = tuple(TaskSpec(name=t["name"], type=t["type"],
                           source=TaskSource(**{**t["source"], "path": tuple(t["source"].get("path") or ()),
                                                "qrels": tuple(t["source"].get("qrels") or ())}),
                           columns=dict(t["columns"]), instruction=t.get("instruction", ""),
                           exclude_labels=tuple(t.get("exclude_labels") or ()), positives=t.get("positives", "auto"))
                  for t in d["tasks"])
    splits = d.get("splits") or DEFAULT_SPLITS
    if isinstance(splits, dict):
        # Recorded before the order was kept (keys sorted): the usual order, then the rest.
        usual = [s for s in DEFAULT_SPLITS if s in splits]
        splits = {s: splits[s] for s in usual + sorted(set(splits) - set(usual))}
    return TaskSetSpec(name=d["name"], tasks=tasks, corpus=d.get("corpus"), seed=d.get("seed", 0),
                       splits=dict(splits) if isinstance(splits, dict) else {n: float(f) for n, f in splits},
                       instruction_template=d.get("instruction_template", DEFAULT_TEMPLATE))


def template_fields(value: str) -> list[str]:
    found = _FIELD.findall(value)
    return found if found else [value]


def render(value: str, row: dict[str, Any]) -> str | None:
    """A column name gives that column; a template fills every field (None if one is empty)."""
    if not _FIELD.search(value):
        v = row.get(value)
        return v
    parts = {}
    for name in _FIELD.findall(value):
        v = row.get(name)
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        parts[name] = v
    return _FIELD.sub(lambda m: str(parts[m.group(1)]), value)


def load_task_set(path: str) -> TaskSetSpec:
    where = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such task spec") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid YAML ({first_line(e)})") from None
    return parse_task_set(raw, where, path)


def parse_task_set(raw: Any, where: str = "spec", path: str = "") -> TaskSetSpec:
    def fail(field_name: str, message: str) -> InputError:
        return InputError(f"{where}: {field_name}: {message}")

    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping with 'name' and 'tasks'")
    known = {"name", "corpus", "seed", "splits", "instruction_template", "tasks"}
    for key in raw:
        if key not in known:
            raise fail(key, f"unknown field (expected one of {', '.join(sorted(known))})")
    name = _name(raw.get("name"), lambda m: fail("name", m))
    corpus = raw.get("corpus")
    if corpus is not None:
        _name(corpus, lambda m: fail("corpus", m))
    splits = raw.get("splits", dict(DEFAULT_SPLITS))
    if not isinstance(splits, dict) or not splits or not all(
            isinstance(v, (int, float)) and v >= 0 for v in splits.values()):
        raise fail("splits", "expected a mapping of split name to a non-negative fraction")
    if abs(sum(splits.values()) - 1.0) > 1e-6:
        raise fail("splits", f"fractions must sum to 1 (got {sum(splits.values()):g})")
    template = raw.get("instruction_template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or "{instruction}" not in template:
        raise fail("instruction_template", "must be a string containing {instruction}")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise fail("tasks", "expected a non-empty list of tasks")
    tasks = tuple(_parse_task(t, f"tasks[{i}]", fail, corpus) for i, t in enumerate(tasks_raw))
    names = [t.name for t in tasks]
    for n in names:
        if names.count(n) > 1:
            raise fail("tasks", f"task name {n!r} is used twice")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        raise fail("seed", "must be an integer")
    return TaskSetSpec(name=name, tasks=tasks, corpus=corpus, seed=seed,
                       splits={str(k): float(v) for k, v in splits.items()},
                       instruction_template=template, path=path)


def _name(value: Any, fail) -> str:
    if not isinstance(value, str):
        raise fail("missing or not a string")
    try:
        return validate_name(value)
    except InputError as e:
        raise fail(str(e)) from None


def _parse_task(raw: Any, at: str, fail, default_corpus: str | None) -> TaskSpec:
    if not isinstance(raw, dict):
        raise fail(at, "expected a mapping")
    known = {"name", "type", "source", "columns", "instruction", "exclude_labels", "positives"}
    for key in raw:
        if key not in known:
            raise fail(f"{at}.{key}", f"unknown field (expected one of {', '.join(sorted(known))})")
    name = _name(raw.get("name"), lambda m: fail(f"{at}.name", m))
    task_type = raw.get("type")
    if task_type not in TASK_TYPES:
        raise fail(f"{at}.type", f"unknown task type {task_type!r} (expected one of {', '.join(TASK_TYPES)})")
    source = _parse_source(raw.get("source"), f"{at}.source", fail, default_corpus)
    if source.judged and task_type != RETRIEVAL:
        raise fail(f"{at}.source", f"qrels judge retrieval tasks, not a {task_type} task")
    columns = _parse_columns(raw.get("columns", BEIR_COLUMNS if source.beir else None), at, fail, task_type, source)
    instruction = raw.get("instruction", "")
    if not isinstance(instruction, str):
        raise fail(f"{at}.instruction", "must be a string")
    exclude = raw.get("exclude_labels", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise fail(f"{at}.exclude_labels", "must be a list of strings")
    if exclude and task_type not in (*CLASS_TYPES, PAIR):
        raise fail(f"{at}.exclude_labels", f"a {task_type} task has no labels")
    positives = raw.get("positives", "auto")
    if positives not in POSITIVE_ID_KINDS:
        raise fail(f"{at}.positives", f"must be one of {', '.join(POSITIVE_ID_KINDS)}, got {positives!r}")
    return TaskSpec(name=name, type=task_type, source=source, columns=dict(columns),
                    instruction=instruction.strip(), exclude_labels=tuple(exclude), positives=positives)


def _parse_columns(columns: Any, at: str, fail, task_type: str, source: TaskSource) -> dict[str, str]:
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise fail(f"{at}.columns", "expected a mapping of field to source column or template")
    required, optional = TASK_COLUMNS[task_type]
    for col in required:
        if col not in columns:
            raise fail(f"{at}.columns", f"a {task_type} task needs {col!r} (needs {', '.join(required)})")
    for col in columns:
        if col not in required + optional:
            raise fail(f"{at}.columns.{col}", f"not a field of a {task_type} task "
                                              f"(fields: {', '.join(required + optional)})")
    if task_type == RETRIEVAL:
        ways = [w for w in ("positive_ids", "positive") if w in columns] + (["qrels"] if source.judged else [])
        if len(ways) != 1:
            raise fail(f"{at}.columns", "a retrieval task names its positives one way: positive_ids, positive "
                                        f"(text pairs) or a source with qrels; got {', '.join(ways) or 'none'}")
        if source.judged and "id" not in columns:
            raise fail(f"{at}.columns", "a task judged by qrels needs 'id': the query id its qrels name")
    return columns


def _parse_source(raw: Any, at: str, fail, default_corpus: str | None) -> TaskSource:
    if raw is None and default_corpus:
        return TaskSource(corpus=default_corpus)
    if not isinstance(raw, dict):
        raise fail(at, "expected {corpus: NAME}, {path: FILE}, {hf: NAME} or {beir: DIR}")
    kinds = [k for k in ("corpus", "path", "hf", "beir") if k in raw]
    if len(kinds) != 1:
        raise fail(at, "give exactly one of corpus, path, hf or beir")
    known = {"corpus", "version", "path", "format", "hf", "config", "split", "qrels", "beir"}
    for key in raw:
        if key not in known:
            raise fail(f"{at}.{key}", f"unknown field (expected one of {', '.join(sorted(known))})")
    if "qrels" in raw and "path" not in raw:
        raise fail(f"{at}.qrels", "qrels judge the queries of a path source ({path: queries.jsonl, qrels: ...})")
    if "corpus" in raw:
        return TaskSource(corpus=_name(raw["corpus"], lambda m: fail(f"{at}.corpus", m)),
                          version=raw.get("version"))
    if "beir" in raw:
        if not isinstance(raw["beir"], str):
            raise fail(f"{at}.beir", "expected the path of a BEIR folder")
        return TaskSource(beir=raw["beir"])
    if "path" in raw:
        return TaskSource(path=_paths(raw["path"], f"{at}.path", fail), format=raw.get("format"),
                          qrels=_paths(raw["qrels"], f"{at}.qrels", fail) if "qrels" in raw else ())
    return TaskSource(hf=str(raw["hf"]), hf_config=raw.get("config"), split=str(raw.get("split", "train")))


def _paths(value: Any, at: str, fail) -> tuple[str, ...]:
    paths = value if isinstance(value, list) else [value]
    if not paths or not all(isinstance(p, str) for p in paths):
        raise fail(at, "expected a file path or a list of them")
    return tuple(paths)
