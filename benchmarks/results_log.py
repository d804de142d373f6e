"""A benchmark's results as JSON lines under the data root, one line per finished part,
with the machine and the time: what makes a long benchmark resumable and its figures
traceable (benchmarks/negatives_ablation.py, benchmarks/llm2vec_chain.py)."""

from __future__ import annotations

import json
import os
import platform
import time

from storage import Catalog


def record(catalog: Catalog, folder: str, row: dict) -> None:
    path = catalog.root.path(folder, "results.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**row, "machine": f"{platform.node()} ({os.cpu_count()} cores)",
                            "at": time.strftime("%Y-%m-%d %H:%M")}) + "\n")


def results(catalog: Catalog, folder: str) -> list[dict]:
    path = catalog.root.path(folder, "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
