"""What the mined negatives are worth: one student, trained on four kinds of negatives.

    python benchmarks/negatives_ablation.py [--root DIR] [--seeds 0,1,2] [--steps 32] [--arms a,b,c,d]
        [--train-config configs/train/cpu-minilm.yaml] [--negatives 4] [--markdown OUT.md]

Every arm trains the same student (the training config's backbone, pooling, LoRA, learning
rate, temperature and max length) for the same steps on the vital retrieval tasks; only
the negatives differ:

| arm | negatives per query                                                           |
|-----|-------------------------------------------------------------------------------|
| a   | none: in-batch negatives only (``quarry export --num-negatives 0``)           |
| b   | naive top-k from the teacher: only the query's own positive (and its text) removed |
| c   | Quarry's default: positive-aware topk_perc_pos 0.95 + the same-text cross-positive filter |
| d   | as c, then k drawn at random from the first 10 eligible (NV-Retriever's sampled top-k) |

Baselines: the teacher (as it mined: bare queries) and the untrained student (the backbone
with the config's pooling, queries with their instructions). Each arm runs once per seed;
the seed drives the batch order, the pooling head's initialisation, dropout and arm d's
draw. ``quarry eval`` scores everything on the test split, every task, and the script
prints mean +- sample std over seeds, per task, as a Markdown table (also to --markdown),
then asks DuckDB why arm c turned down the naive arm's negatives.

A data root that already holds some runs keeps them: a finished run is not trained again,
and the teacher's embeddings come from mining's cache. A benchmark, not a test: record the
figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from miners.select import SelectionConfig  # noqa: E402
from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.task_spec import load_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.evaluate import EvalConfig, EvalResult, evaluate  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.run import DEFAULT_TASK_SPEC, DEFAULT_TRAIN_CONFIG  # noqa: E402
from pipelines.train.backbone import resolve_backbone  # noqa: E402
from pipelines.train.export import ExportConfig, export_shards  # noqa: E402
from pipelines.train.launch import (  # noqa: E402
    load_train_config,
    task_prompts,
    train,
)
from pipelines.train.run_state import discard_uncheckpointed_run, run_state  # noqa: E402
from storage import PACKAGED_MINILM, Catalog  # noqa: E402
from storage.schemas import RETRIEVAL  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402

UNTRAINED = "abl-untrained"
SAMPLE_WINDOW = 10  # arm d: NV-Retriever's "sampled top-k" draws from the top 10


@dataclass(frozen=True)
class Arm:
    key: str
    label: str

    def selection(self, negatives: int, seed: int) -> SelectionConfig | None:
        """The retrieval tasks' selection, or None for in-batch negatives only (no mining)."""
        if self.key == "a":
            return None
        if self.key == "b":
            return SelectionConfig(strategy="topk", num_negatives=negatives, drop_cross_positives=False)
        if self.key == "c":
            return SelectionConfig(num_negatives=negatives)
        return SelectionConfig(num_negatives=negatives, sampling="random", sample_window=SAMPLE_WINDOW, seed=seed)

    @property
    def mines(self) -> bool:
        return self.selection(1, 0) is not None

    def negatives_name(self, seed: int) -> str:
        # Only arm d's selection depends on the seed; the others mine once.
        return f"abl-{self.key}" + (f"-s{seed}" if self.key == "d" else "")


ARMS = {a.key: a for a in (
    Arm("a", "(a) in-batch negatives only"),
    Arm("b", "(b) naive top-k"),
    Arm("c", "(c) Quarry default: perc_pos 0.95 + cross-positive filter"),
    Arm("d", f"(d) c, then sampled from the top {SAMPLE_WINDOW}"),
)}


def run_name(arm: Arm, seed: int) -> str:
    return f"abl-{arm.key}-s{seed}"


def prepare_data(catalog: Catalog) -> tuple[str, list[str]]:
    """Corpus and examples from the embedded vital articles (unchanged inputs are skipped)."""
    spec = load_task_set(DEFAULT_TASK_SPEC)
    build_wiki(WikiBuildConfig(name=spec.corpus or spec.name), catalog)
    build_tasks(spec, catalog)
    retrieval = [t.name for t in spec.tasks if t.type == RETRIEVAL]
    return spec.name, retrieval


def mine_arm(catalog: Catalog, examples: str, tasks: list[str], arm: Arm, negatives: int, seed: int) -> None:
    selection = arm.selection(negatives, seed)
    if selection is None:
        return
    cfg = MineConfig(examples=examples, tasks=tuple(tasks), name=arm.negatives_name(seed), selection=selection,
                     class_selection=SelectionConfig(strategy="topk", num_negatives=negatives))
    print(mine(cfg, catalog).summary().splitlines()[-1], flush=True)


def train_arm(catalog: Catalog, base: TrainConfig, examples: str, arm: Arm, seed: int, negatives: int,
              steps: int) -> str:
    name = run_name(arm, seed)
    shards = export_shards(ExportConfig(name=name, examples=examples, negatives=arm.negatives_name(seed),
                                        training_stage=1, global_batch=base.global_batch or 16,
                                        workers=base.num_workers, num_negatives=negatives if arm.mines else 0,
                                        seed=seed), catalog)
    cfg = replace(base, run_name=name, shards=name, max_steps=steps, seed=seed)
    state = run_state(cfg, catalog)
    if state.finished:
        print(f"{name}: already trained ({state.done} steps)", flush=True)
        return name
    if state.done is None:
        discard_uncheckpointed_run(cfg, catalog)
    short = sum(p.short_of_negatives for p in shards.tasks.values())
    result = train(cfg, catalog, resume=state.done is not None)
    print(f"{name}: {result.metrics.get('step')} steps, last loss {result.metrics.get('loss', float('nan')):.4f} "
          f"({short} queries left out short of negatives)", flush=True)
    return name


def save_untrained_student(catalog: Catalog, base: TrainConfig, shards_name: str) -> str:
    """The backbone with the student's pooling (a fresh head for latent attention, seeded)
    and its task prompts, saved as a Quarry model: what every arm starts from."""
    import torch

    from trainers.model import EmbeddingModel

    out = catalog.root.path("models", UNTRAINED)
    if os.path.isdir(out):
        return UNTRAINED
    torch.manual_seed(base.seed)
    model = EmbeddingModel.from_pretrained(resolve_backbone(base, catalog).local, pooling=base.pooling,
                                           bidirectional=base.bidirectional, max_length=base.saved_max_length,
                                           trust_remote_code=base.trust_remote_code)
    model.config.prompts = task_prompts(catalog, catalog.manifest("shards", shards_name))
    model.save_pretrained(out)
    return UNTRAINED


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown_table(result: EvalResult, rows: list[tuple[str, list[str]]]) -> str:
    """One row per arm or baseline: each task's main score, mean ± std over its models."""
    mains = result.main_scores()
    by_model = {m.model: m for m in result.models}
    lines = ["| negatives | " + " | ".join(f"{t} {metric}" for t, metric in mains) + " |",
             "|---|" + "---|" * len(mains)]
    for label, models in rows:
        cells = [mean_std([by_model[m].value(t, metric) for m in models]) for t, metric in mains]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


AUDIT_SQL = """
select coalesce(r.reason, 'kept by c') as what_c_did, count(*) as naive_negatives,
       round(avg(n.neg_score), 3) as mean_score, round(avg(n.neg_score / n.positive_score), 3) as score_over_positive
from negatives n left join rejections r
  on r.dataset = 'abl-c' and r.example_id = n.example_id and r.cand_id = n.neg_id
where n.dataset = 'abl-b'
group by all order by naive_negatives desc
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("QUARRY_HOME", "quarry-data"), help="data root")
    p.add_argument("--train-config", default=DEFAULT_TRAIN_CONFIG, help="the student (default %(default)s)")
    p.add_argument("--arms", default="a,b,c,d")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=32, help="training steps per run (default %(default)s)")
    p.add_argument("--negatives", type=int, default=4, help="hard negatives per query in arms b-d (default 4, "
                   "as NV-Retriever's ablations)")
    p.add_argument("--markdown", help="also write the table here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="quarry: %(message)s", stream=sys.stderr)
    from pipelines.cli.console import quiet_libraries

    for noisy in ("faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
    quiet_libraries()
    arms = [ARMS[k] for k in args.arms.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    catalog = Catalog(args.root)
    base = load_train_config(args.train_config)
    started = time.perf_counter()
    examples, tasks = prepare_data(catalog)
    for arm in arms:
        for seed in (seeds if arm.key == "d" else seeds[:1]):
            mine_arm(catalog, examples, tasks, arm, args.negatives, seed)
    mined_s = time.perf_counter() - started
    runs = {arm.key: [train_arm(catalog, base, examples, arm, seed, args.negatives, args.steps) for seed in seeds]
            for arm in arms}
    trained_s = time.perf_counter() - started - mined_s
    untrained = save_untrained_student(catalog, base, runs[arms[0].key][0])
    models = [PACKAGED_MINILM, untrained] + [m for arm in arms for m in runs[arm.key]]
    result = evaluate(EvalConfig(models=models, examples=examples, split="test"), catalog)
    eval_s = time.perf_counter() - started - mined_s - trained_s
    rows = [(f"teacher ({PACKAGED_MINILM})", [PACKAGED_MINILM]), ("untrained student", [untrained])]
    rows += [(ARMS[k].label, names) for k, names in runs.items()]
    table = markdown_table(result, rows)
    heading = (f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()}), student {base.backbone} "
               f"{base.pooling.mode} pooling, LoRA {'r=%d' % base.lora.r if base.lora else 'off'}, lr {base.lr}, "
               f"temperature {base.temperature}, max length {base.max_length}; {args.steps} steps x "
               f"{base.global_batch} queries; {args.negatives} hard negatives (arms b-d); seeds {args.seeds}\n"
               f"wall time: mining {mined_s / 60:.1f} min, training {trained_s / 60:.1f} min, "
               f"eval {eval_s / 60:.1f} min; evals/{examples} {result.evals_version}")
    print(f"\n{heading}\n\n{table}\n")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(f"{heading}\n\n{table}\n")
    if {"b", "c"} <= {a.key for a in arms}:
        from storage import print_query

        print("Why arm c turned down arm b's naive negatives (DuckDB over negatives/abl-b and rejections/abl-c):")
        print_query(catalog, AUDIT_SQL)


if __name__ == "__main__":
    main()
