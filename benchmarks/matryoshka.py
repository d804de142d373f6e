"""Does Matryoshka training keep small prefixes useful? The CPU demo's student, twice.

    python benchmarks/matryoshka.py [--root DIR] [--steps 64] [--dims 32,64,128] [--seed 0] [--markdown OUT.md]

Both runs train the training config's student (default configs/train/cpu-minilm.yaml:
MiniLM, mean pooling, LoRA) for the same steps on the same stage-1 shards; one adds
``matryoshka_dims``. ``quarry eval --dims`` then scores both on the test split at every
prefix size and at the full 384 dimensions, on the retrieval tasks they trained on. The
question is the drop from the full vector to a small prefix: Matryoshka training should
make it smaller.

The data (corpus, tasks, negatives, shards) are built as ``make run`` builds them when the
root lacks them; finished runs are not trained again. A benchmark, not a test: record the
figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.task_spec import load_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.evaluate import EvalConfig, evaluate  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.run import DEFAULT_TASK_SPEC, DEFAULT_TRAIN_CONFIG  # noqa: E402
from pipelines.train.export import ExportConfig, export_shards  # noqa: E402
from pipelines.train.launch import load_train_config, train  # noqa: E402
from pipelines.train.run_state import discard_uncheckpointed_run, run_state  # noqa: E402
from storage import Catalog  # noqa: E402

TASKS = ["vital-desc2article", "vital-title2article"]  # the retrieval tasks stage 1 trains on


def ensure_shards(catalog: Catalog, train_config: str) -> str:
    spec = load_task_set(DEFAULT_TASK_SPEC)
    cfg = load_train_config(train_config, {"shards": f"{spec.name}-stage1"})
    if not catalog.exists("shards", cfg.shards):
        build_wiki(WikiBuildConfig(name=spec.corpus or spec.name), catalog)
        build_tasks(spec, catalog)
        mine(MineConfig(examples=spec.name), catalog)
        export_shards(ExportConfig(name=cfg.shards, examples=spec.name, training_stage=1, workers=cfg.num_workers,
                                   global_batch=cfg.global_batch), catalog)
    return cfg.shards


def train_once(catalog: Catalog, train_config: str, shards: str, name: str, steps: int, seed: int,
               dims: list[int] | None) -> float:
    cfg = load_train_config(train_config, {"shards": shards, "run_name": name, "max_steps": steps, "seed": seed,
                                           "matryoshka_dims": dims})
    state = run_state(cfg, catalog)
    if state.finished:
        return 0.0
    if state.done is None:
        discard_uncheckpointed_run(cfg, catalog)
    t0 = time.perf_counter()
    train(cfg, catalog, resume=state.done is not None)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=os.environ.get("QUARRY_HOME", "quarry-data"))
    p.add_argument("--train-config", default=DEFAULT_TRAIN_CONFIG)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--dims", default="32,64,128")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", help="also write the table here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dims = [int(d) for d in args.dims.split(",")]
    catalog = Catalog(args.root)
    shards = ensure_shards(catalog, args.train_config)
    runs = {"plain": f"mrl-off-s{args.seed}-{args.steps}", "matryoshka": f"mrl-on-s{args.seed}-{args.steps}"}
    seconds = {arm: train_once(catalog, args.train_config, shards, name, args.steps, args.seed,
                               dims if arm == "matryoshka" else None) for arm, name in runs.items()}
    result = evaluate(EvalConfig(models=list(runs.values()), tasks=TASKS, split="test", dims=dims, write=False),
                      catalog)
    scores = {m.model: {s.task: s.value for s in m.scores if s.metric == "ndcg_at_10"} for m in result.models}
    lines = [f"Matryoshka vs plain training: {args.train_config}, {args.steps} steps, seed {args.seed}, shards/{shards}; "
             f"test-split nDCG@10 (drop from the full vector in brackets). Machine: {platform.machine()}, "
             f"{os.cpu_count()} CPUs. Training s: plain {seconds['plain']:.0f}, matryoshka {seconds['matryoshka']:.0f} "
             "(0: already trained)", "",
             "| task | dims | plain | matryoshka | matryoshka - plain |", "|---|---:|---:|---:|---:|"]
    for task in TASKS:
        full = {arm: scores[name][task] for arm, name in runs.items()}
        for dim in [*sorted(dims), None]:
            got = {arm: scores[name if dim is None else f"{name}@{dim}"][task] for arm, name in runs.items()}
            cells = [f"{got[a]:.4f}" + ("" if dim is None else f" ({got[a] - full[a]:+.4f})") for a in runs]
            lines.append(f"| {task} | {dim or 'full'} | {cells[0]} | {cells[1]} | "
                         f"{got['matryoshka'] - got['plain']:+.4f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
