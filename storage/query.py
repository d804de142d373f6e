"""Read-only SQL over the catalog with DuckDB.

Every dataset kind becomes a view (``corpus``, ``examples``, ``negatives``, ...): the union
of the latest version of each dataset of that kind, with ``dataset`` and ``version``
columns prepended. ``catalog`` lists every committed version; ``changes`` the rows each version
added, removed and modified against the one before (``storage.changes``). ``pins`` select a version
other than the latest for a dataset.

Read-only is enforced twice: only SELECT statements (DESCRIBE, SHOW and SUMMARIZE parse as
SELECT) and EXPLAIN of a SELECT are accepted, and the DuckDB connection runs with external
access disabled and its configuration locked, so even a SELECT cannot read or write files,
attach databases or load extensions. Data reaches
DuckDB as Arrow datasets registered on the connection, which works for every filesystem
pyarrow supports.

Tested by tests/storage/test_query.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from storage.catalog import Catalog
from storage.changes import COUNTS, ChangeSummary
from storage.errors import InputError, ReadOnlyError, first_line

if TYPE_CHECKING:
    # duckdb is imported where a query runs, not with ``storage``: the layers above import
    # ``storage`` everywhere, also where no SQL runs and duckdb need not be installed (a GPU
    # machine running the model's tests and benchmarks, benchmarks/gpu_check.py).
    import duckdb

# EXPLAIN ANALYZE runs its statement: "explain analyze drop view catalog" drops the view.
# What follows EXPLAIN and its options is therefore parsed again and must be a SELECT.
_EXPLAIN_PREFIX = re.compile(
    r"\s*explain\b(?:\s|/\*.*?\*/|--[^\n]*\n)*(?:analy[sz]e\b|\([^()]*\))?", re.IGNORECASE | re.DOTALL)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_pin(text: str) -> tuple[str, str, str]:
    """``kind/name=version`` -> (kind, name, version)."""
    try:
        left, version = text.split("=", 1)
        kind, name = left.split("/", 1)
    except ValueError:
        raise InputError(f"bad --at {text!r}: expected KIND/NAME=VERSION, e.g. examples/vital=v0001")
    return kind, name, version


@dataclass
class QueryEngine:
    catalog: Catalog
    pins: dict[tuple[str, str], str] = field(default_factory=dict)

    def connect(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        con = duckdb.connect(":memory:")
        by_kind: dict[str, list[tuple[str, str, str]]] = {}
        catalog_rows, change_rows = [], []
        for kind, name in self.catalog.iter_datasets():
            for version in self.catalog.versions(kind, name):
                m = self.catalog.manifest(kind, name, version)
                catalog_rows.append((kind, name, version, m.num_rows, m.num_bytes, m.created_at,
                                     m.content_hash, m.code_version))
                change_rows += _change_rows(m)
            ref = self.catalog.resolve(kind, name, self.pins.get((kind, name)))
            table_name = f"_{kind}__{name}__{ref.version}"
            con.register(table_name, self.catalog.arrow_dataset(kind, name, ref.version))
            by_kind.setdefault(kind, []).append((name, ref.version, table_name))
        for kind, members in by_kind.items():
            selects = [f"SELECT {_literal(n)} AS dataset, {_literal(v)} AS version, * FROM {_ident(t)}"
                       for n, v, t in members]
            con.execute(f"CREATE VIEW {_ident(kind)} AS " + " UNION ALL BY NAME ".join(selects))
        con.register("_catalog", pa.table(
            list(zip(*catalog_rows)) if catalog_rows else [[] for _ in range(8)],
            names=["kind", "name", "version", "rows", "bytes", "created_at", "content_hash", "code_version"]))
        con.execute("CREATE VIEW catalog AS SELECT * FROM _catalog")
        con.register("_changes", pa.table(list(zip(*change_rows)) if change_rows else [[] for _ in CHANGE_COLUMNS],
                                          schema=CHANGE_SCHEMA))
        con.execute("CREATE VIEW changes AS SELECT * FROM _changes")
        # From here on nothing may touch the filesystem or change these settings.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con

    def relation(self, sql: str, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
        import duckdb

        check_read_only(sql, con)
        try:
            return con.sql(sql)
        except duckdb.Error as e:
            raise InputError(f"query failed: {first_line(e)}") from None

    def run(self, sql: str) -> pa.Table:
        import duckdb

        con = self.connect()
        rel = self.relation(sql, con)
        try:
            return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
        except duckdb.Error as e:
            raise InputError(f"query failed: {first_line(e)}") from None


CHANGE_COLUMNS = ("kind", "name", "version", "previous_version", "task", *COUNTS)
CHANGE_SCHEMA = pa.schema([(c, pa.string()) for c in CHANGE_COLUMNS[:5]] + [(c, pa.int64()) for c in COUNTS])


def _change_rows(m) -> list[tuple]:
    """The ``changes`` view's rows of one version: one per task for examples, else one."""
    raw = m.stats.get("changes") if isinstance(m.stats, dict) else None
    if not isinstance(raw, dict):
        return []
    summary = ChangeSummary.from_dict(raw)
    parts = summary.groups.items() if summary.groups else [(None, summary.total)]
    return [(m.kind, m.name, m.version, summary.previous_version, group,
             *(getattr(counts, c) for c in COUNTS)) for group, counts in parts]


def check_read_only(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise InputError(f"cannot parse query: {first_line(e)}") from None
    if len(statements) != 1:
        raise InputError(f"give exactly one SQL statement (got {len(statements)})")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        inner = _explained_statement(statement.query, con)
        if inner != duckdb.StatementType.SELECT:
            what = f"a {inner.name} statement" if inner else "a statement that cannot be told apart"
            raise ReadOnlyError(f"quarry query is read-only: EXPLAIN is allowed only of a SELECT, not of {what} "
                                "(EXPLAIN ANALYZE runs it)")
    elif statement.type != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"quarry query is read-only: {statement.type.name} statements are refused "
                            "(use SELECT, WITH ... SELECT, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)")


def _explained_statement(sql: str, con: duckdb.DuckDBPyConnection) -> duckdb.StatementType | None:
    """The type of the statement an EXPLAIN wraps, or None when it cannot be told (refused)."""
    import duckdb

    prefix = _EXPLAIN_PREFIX.match(sql)
    if prefix is None:
        return None
    try:
        inner = con.extract_statements(sql[prefix.end():])
    except duckdb.Error:
        return None
    return inner[0].type if len(inner) == 1 else None
