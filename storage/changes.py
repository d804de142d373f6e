"""What changed between two versions of a dataset: rows added, removed and modified.

Rows are matched by a key column (``doc_id``, ``example_id``); a matched row is modified
when any of the compared columns differs. Each side is reduced to (key, fingerprint,
group) first, so two versions are compared with one Arrow join whatever their columns
hold (list columns cannot be join payloads). A build records the result in its manifest's
``stats["changes"]``; ``quarry query`` shows it as the ``changes`` view.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

COUNTS = ("added", "removed", "modified", "unchanged")


@dataclass(frozen=True)
class ChangeKey:
    """How rows of one kind of dataset are matched and compared."""

    key: str  # the row id
    compare: tuple[str, ...]  # a difference in any of these makes a matched row "modified"
    group: str | None = None  # counts are also kept per value of this column (examples: task)

    def columns(self) -> list[str]:
        return [self.key, *self.compare, *([self.group] if self.group else [])]


CORPUS_CHANGES = ChangeKey("doc_id", ("title", "content_hash"))
EXAMPLE_CHANGES = ChangeKey("example_id",
                            ("query_hash", "positive_ids", "positive_grades", "positive", "label", "score"), group="task")


@dataclass
class ChangeCounts:
    added: int = 0
    removed: int = 0
    modified: int = 0
    unchanged: int = 0

    def describe(self) -> str:
        return f"{self.added} added, {self.removed} removed, {self.modified} modified, {self.unchanged} unchanged"


@dataclass
class ChangeSummary:
    previous_version: str | None  # None: the first version, every row added
    total: ChangeCounts
    groups: dict[str, ChangeCounts] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.total.added or self.total.removed or self.total.modified)

    def to_dict(self) -> dict:
        return {"previous_version": self.previous_version, **asdict(self.total),
                "groups": {g: asdict(c) for g, c in sorted(self.groups.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "ChangeSummary":
        return cls(d.get("previous_version"), ChangeCounts(**{k: d.get(k, 0) for k in COUNTS}),
                   {g: ChangeCounts(**c) for g, c in d.get("groups", {}).items()})

    def describe(self) -> str:
        if self.previous_version is None:
            return f"first version, {self.total.added} added"
        return f"vs {self.previous_version}: {self.total.describe()}"


def fingerprints(table: pa.Table, spec: ChangeKey) -> pa.Table:
    """(key, fp[, group]): ``fp`` hashes the compared columns of each row."""
    values = [table.column(c).to_pylist() for c in spec.compare]
    fps = [hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:24]
           for row in zip(*values)] if values else [""] * table.num_rows
    cols = {"key": table.column(spec.key), "fp": pa.array(fps, pa.string())}
    if spec.group:
        cols["group"] = table.column(spec.group)
    return pa.table(cols)


def summarize_changes(previous: pa.Table | None, new: pa.Table, spec: ChangeKey,
                      previous_version: str | None) -> ChangeSummary:
    """Compare two versions' rows (each with ``spec.columns()``); pure."""
    new_fp = fingerprints(new, spec)
    if previous is None:
        groups = _count_by_group(new_fp, "added", spec) if spec.group else {}
        return ChangeSummary(None, ChangeCounts(added=new.num_rows), groups)
    old_fp = fingerprints(previous, spec)
    joined = old_fp.rename_columns([f"old_{c}" for c in old_fp.column_names]).join(
        new_fp, keys="old_key", right_keys="key", join_type="full outer", coalesce_keys=False)
    old_key, new_key = joined.column("old_key"), joined.column("key")
    added = pc.is_null(old_key)
    removed = pc.is_null(new_key)
    both = pc.and_(pc.is_valid(old_key), pc.is_valid(new_key))
    modified = pc.and_(both, pc.not_equal(joined.column("old_fp"), joined.column("fp")))
    unchanged = pc.and_(both, pc.equal(joined.column("old_fp"), joined.column("fp")))
    masks = {"added": added, "removed": removed, "modified": modified, "unchanged": unchanged}
    total = ChangeCounts(**{k: int(pc.sum(m.cast(pa.int64())).as_py() or 0) for k, m in masks.items()})
    groups: dict[str, ChangeCounts] = {}
    if spec.group:
        # A removed row's group is its old one; every other row's, its new one.
        group = pc.if_else(removed, joined.column("old_group"), joined.column("group"))
        for kind, mask in masks.items():
            for g in pc.filter(group, mask).to_pylist():
                setattr(groups.setdefault(g, ChangeCounts()), kind, getattr(groups[g], kind) + 1)
    return ChangeSummary(previous_version, total, groups)


def _count_by_group(fp: pa.Table, kind: str, spec: ChangeKey) -> dict[str, ChangeCounts]:
    out: dict[str, ChangeCounts] = {}
    for g in fp.column("group").to_pylist():
        setattr(out.setdefault(g, ChangeCounts()), kind, getattr(out[g], kind) + 1)
    return out


def staged_changes(writer, spec: ChangeKey) -> ChangeSummary:
    """The changes of a writer's staged files against the latest committed version of its
    dataset (``writer``: a ``storage.writer.DatasetWriter`` that has staged its files)."""
    import pyarrow.parquet as pq

    catalog = writer.catalog
    latest = catalog.latest(writer.kind, writer.name)
    parts = [pq.read_table(path, columns=spec.columns(), filesystem=writer.filesystem)
             for path in writer.staged_files()]
    parts = [p for p in parts if p.num_rows]
    new = pa.concat_tables(parts, promote_options="permissive") if parts else None
    if new is None:
        new = pa.table({c: pa.array([], pa.string()) for c in spec.columns()})
    previous = None
    if latest:
        # A version written before a compared column existed reads it as nulls: only a row
        # that now holds a value there counts as modified.
        have = set(catalog.manifest(writer.kind, writer.name, latest).arrow().names)
        previous = catalog.read_table(writer.kind, writer.name, latest,
                                      columns=[c for c in spec.columns() if c in have])
        for c in spec.columns():
            if c not in have:
                previous = previous.append_column(c, pa.nulls(previous.num_rows, new.schema.field(c).type))
        previous = previous.select(spec.columns())
    return summarize_changes(previous, new, spec, latest)
