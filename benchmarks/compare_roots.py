"""Two data roots compared by content: did a change of code leave ``quarry run``'s data as it was?

    python benchmarks/compare_roots.py OLD_ROOT NEW_ROOT [--run cpu-minilm]

For every dataset kind ``quarry run`` writes, the latest version of each name in both roots
is read and hashed: its rows in their order, every column but those that name the run that
wrote them (``run_id``) or that are expected to differ (``created_at`` is not a column).
Then ``report.json`` of the latest negatives, the training losses at every step
(``runs/<run>/metrics.jsonl``) and the run's verdict (``runs/<run>/report.md``). Prints one
line per item, ``same`` or ``DIFFERENT``, and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow as pa  # noqa: E402

from storage import Catalog  # noqa: E402

KINDS = ("corpus", "examples", "negatives", "rejections", "searched", "shards", "embeddings", "evals")
RUN_COLUMNS = {"run_id"}


def table_hash(table: pa.Table) -> str:
    table = table.drop_columns([c for c in table.column_names if c in RUN_COLUMNS])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:  # IPC zeroes its padding: equal rows, equal bytes
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


def dataset_hashes(catalog: Catalog) -> dict[str, str]:
    out = {}
    for kind in KINDS:
        for name in catalog.names(kind):
            version = catalog.latest(kind, name)
            table = catalog.read_table(kind, name, version)
            if kind == "evals":  # the models' fingerprints name folders by content; the values are what matter
                table = table.select(["model", "task", "metric", "value"])
            out[f"{kind}/{name}"] = f"{table_hash(table)} ({table.num_rows} rows)"
    return out


def run_items(root: str, run: str, catalog: Catalog) -> dict[str, str]:
    out = {}
    metrics = os.path.join(root, "runs", run, "metrics.jsonl")
    if os.path.exists(metrics):
        steps = {}
        for line in open(metrics, encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                steps[row["step"]] = round(row["loss"], 6)
        out["losses at every step"] = json.dumps(sorted(steps.items()))
    report = os.path.join(root, "runs", run, "report.md")
    if os.path.exists(report):
        text = open(report, encoding="utf-8").read()
        out["verdict"] = "\n".join(re.findall(r"^ +\S+: \S+ [0-9.]+ vs teacher .*$", text, re.M))
    for name in catalog.names("negatives"):
        path = os.path.join(root, "negatives", name, catalog.latest("negatives", name), "report.json")
        if os.path.exists(path):
            out[f"negatives/{name} report.json"] = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--run", default="cpu-minilm")
    args = p.parse_args()
    sides = []
    for root in (args.old, args.new):
        catalog = Catalog(root)
        sides.append({**dataset_hashes(catalog), **run_items(root, args.run, catalog)})
    differ = 0
    for key in sorted(set(sides[0]) | set(sides[1])):
        a, b = sides[0].get(key), sides[1].get(key)
        same = a == b
        differ += not same
        shown = a if same else f"{a} | {b}"
        print(f"{'same' if same else 'DIFFERENT':9} {key}: {shown if len(shown) < 120 else shown[:117] + '...'}")
    print(f"{differ} item(s) differ" if differ else "every item is the same")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
