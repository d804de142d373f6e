"""Showing catalog contents and query results to people and writing them to files.

One text-table formatter for every table Quarry prints (the dataset listing, the mining
report), and the output of ``quarry query``: a terminal table, or CSV, JSON lines or
Parquet on stdout or in a file.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Sequence

import pyarrow as pa

from storage.catalog import Catalog, human_bytes
from storage.errors import QuarryError
from storage.query import QueryEngine, parse_pin

QUERY_FORMATS = ("table", "csv", "json", "parquet")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the header first; cells are strings."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def format_datasets(catalog: Catalog, kind: str | None = None, every_version: bool = False) -> str:
    """``quarry datasets``: the latest version of each dataset (or every version), one per line."""
    rows = []
    for k, name in catalog.iter_datasets(kind):
        versions = catalog.versions(k, name)
        for v in versions if every_version else versions[-1:]:
            m = catalog.manifest(k, name, v)
            rows.append((k, name, v if every_version else f"{v} ({len(versions)})", str(m.num_rows),
                         human_bytes(m.num_bytes), m.created_at))
    if not rows:
        return f"no datasets in {catalog.root.uri}"
    header = ("kind", "name", "version" if every_version else "latest (versions)", "rows", "size", "created")
    return format_table(header, rows)


def format_manifest(catalog: Catalog, kind: str, name: str, version: str | None = None) -> str:
    """``quarry show``: a version's manifest as indented JSON, without the binary schema."""
    data = json.loads(catalog.manifest(kind, name, version).to_json())
    data.pop("arrow_schema", None)
    return json.dumps(data, indent=2)


def query_format(fmt: str | None, out: str | None) -> str:
    """The output format: as given, else from ``out``'s extension, else a terminal table."""
    if fmt is not None:
        if fmt not in QUERY_FORMATS:
            raise QuarryError(f"unknown --format {fmt!r}: use {', '.join(QUERY_FORMATS)}")
        return fmt
    if not out:
        return "table"
    fmt = os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in QUERY_FORMATS or fmt == "table":
        raise QuarryError(f"cannot tell the format of {out}: pass --format csv|json|parquet")
    return fmt


def print_query(catalog: Catalog, sql: str, pins: Sequence[str] = (), fmt: str | None = None,
                out: str | None = None, max_rows: int = 40) -> None:
    """Run read-only ``sql`` over the catalog and show or write the result.

    ``pins``: ``KIND/NAME=VERSION`` texts choosing versions other than the latest.
    """
    pinned = {}
    for text in pins:
        kind, name, version = parse_pin(text)
        pinned[(kind, name)] = catalog.resolve(kind, name, version).version
    engine = QueryEngine(catalog, pinned)
    fmt = query_format(fmt, out)
    if fmt == "table":
        if out:
            raise QuarryError("--out needs --format csv, json or parquet")
        con = engine.connect()
        engine.relation(sql, con).show(max_rows=max_rows, max_width=200)
        return
    table = engine.run(sql)
    write_result(table, fmt, out)
    if out:
        print(f"wrote {table.num_rows} rows to {out}", file=sys.stderr)


def write_result(table: pa.Table, fmt: str, out: str | None) -> None:
    """``table`` as csv, json (one object per line) or parquet, to ``out`` or stdout."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        if not out:
            raise QuarryError("--format parquet needs --out FILE")
        pq.write_table(table, out)
    elif fmt == "csv":
        if out:
            pacsv.write_csv(table, out)
        else:
            buf = io.BytesIO()
            pacsv.write_csv(table, buf)
            sys.stdout.write(buf.getvalue().decode())
    else:
        lines = "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in table.to_pylist())
        if out:
            with open(out, "w", encoding="utf-8") as f:
                f.write(lines)
        else:
            sys.stdout.write(lines)
