"""What the mined negatives are worth: one student, trained on each kind of negatives, paired.

    python benchmarks/negatives_ablation.py mine   --teacher minilm|mpnet [--arms b,c,d,e,f,g,h] [--negatives 4]
    python benchmarks/negatives_ablation.py common --teachers minilm,mpnet [--arms b,c,d,e,f,g,h] [--negatives 4]
    python benchmarks/negatives_ablation.py train  --teacher minilm --arms a,b,c --seeds 0-4 [--split test]
                                                   [--steps 32] [--lr 3e-4] [--negatives 4]
    python benchmarks/negatives_ablation.py baselines [--split test]
    python benchmarks/negatives_ablation.py report [--split test] [--pairs c-a,c-b] [--markdown OUT.md]
    python benchmarks/negatives_ablation.py audit  [--teachers minilm,mpnet] [--samples 4]

Every run trains the same student (the training config's backbone, pooling, LoRA,
temperature and max length) on the vital retrieval tasks' train split; only the negatives
differ:

| arm | negatives per query |
|-----|---------------------|
| a   | none: in-batch negatives only (no teacher) |
| b   | naive top-k from the teacher: only the query's own positive (and its text) removed |
| c   | NV-Retriever's positive-aware rule on every query: topk_perc_pos 0.95 + the same-text cross-positive filter |
| d   | as c, then k drawn at random from the first 10 eligible (NV-Retriever's sampled top-k) |
| e   | as c, the threshold on MPNet's scores: MPNet judges the teacher's candidates (``--judge``) |
| f   | top-k + cross-positive filter + drop candidates above 0.8 teacher similarity to the positive document |
| g   | as c, but the threshold only where the teacher ranks the positive first (confident_within 1): Quarry's default |
| h   | f and g together |

Pairing: ``common`` fixes one set of training queries, those every arm of every teacher
named gives k negatives; every run trains on that set (as examples/abl-train), so seed s
gives every arm the same queries in the same batch order, the same LoRA and head
initialisation and the same dropout, and only the negatives differ. ``report`` gives each
arm's mean ± sample std over seeds and, per teacher, the paired difference of chosen arms
with its 95% confidence interval (Student's t over seeds).

Resumable in parts: mining is skipped when its dataset exists, a trained run is not trained
again, a scored (run, split) is not scored again. Scores and wall times go to
<root>/ablation/results.jsonl, one line per scored run. Hyperparameters (--steps, --lr,
--negatives) are chosen on ``--split dev`` runs; ``--split test`` runs are for the report.
A benchmark, not a test: figures and the machine go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_log, beside this script

from miners.select import SelectionConfig  # noqa: E402
from miners.teacher import TeacherSpec  # noqa: E402
from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.task_spec import load_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.evaluate import EvalConfig, evaluate  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.mine.config import JudgeSpec  # noqa: E402
from pipelines.run import DEFAULT_TASK_SPEC, DEFAULT_TRAIN_CONFIG  # noqa: E402
from pipelines.train.export import ExportConfig, export_shards  # noqa: E402
from pipelines.train.launch import load_train_config, train  # noqa: E402
from pipelines.train.run_state import discard_uncheckpointed_run, run_state  # noqa: E402
import results_log  # noqa: E402
from storage import PACKAGED_MINILM, Catalog  # noqa: E402
from storage.packaged import PACKAGED_MPNET  # noqa: E402
from storage.schemas import RETRIEVAL  # noqa: E402

TEACHERS = {"minilm": PACKAGED_MINILM, "mpnet": PACKAGED_MPNET}
TRAIN_EXAMPLES = "abl-train"
SAMPLE_WINDOW = 10  # arm d: NV-Retriever's "sampled top-k" draws from the top 10
# Arms f, h. Of MiniLM's naive top-4 on the vital tasks, 1% (desc2article) to 1.5%
# (title2article) of the negatives are above 0.8 similarity to the positive document, 0.02%
# above 0.9 (docs/benchmarks.md).
POSITIVE_SIMILARITY = 0.8
CONFIDENT_WITHIN = 1  # arms g, h


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    selection: dict | None  # SelectionConfig fields, None: in-batch negatives only
    judge: str | None = None  # a model that rescores the teacher's candidates

    def applies_to(self, teacher: str) -> bool:
        """A judge that is the teacher itself judges nothing."""
        return self.judge is None or TEACHERS[teacher] != self.judge

    def config(self, negatives: int, seed: int) -> SelectionConfig:
        return SelectionConfig(num_negatives=negatives, seed=seed, **self.selection)

    def negatives_name(self, teacher: str, negatives: int, seed: int) -> str:
        # Only arm d's selection depends on the seed; the others mine once.
        sim = self.selection and self.selection.get("max_positive_similarity")
        return (f"abl-{teacher}-{self.key}" + (f"-sim{round(sim * 100)}" if sim else "") + f"-n{negatives}"
                + (f"-s{seed}" if self.key == "d" else ""))


ARMS = {a.key: a for a in (
    Arm("a", "(a) in-batch negatives only", None),
    Arm("b", "(b) naive top-k", {"strategy": "topk", "drop_cross_positives": False}),
    # c, d and e apply the threshold to every query (the default now conditions it: arm g)
    Arm("c", "(c) perc_pos 0.95 + cross-positive filter", {"confident_within": None}),
    Arm("d", f"(d) c, sampled from the top {SAMPLE_WINDOW}", {"sampling": "random", "sample_window": SAMPLE_WINDOW,
                                                             "confident_within": None}),
    Arm("e", "(e) c on the scores of MPNet judging the teacher's candidates", {"confident_within": None},
        judge=PACKAGED_MPNET),
    Arm("f", f"(f) top-k, dropping > {POSITIVE_SIMILARITY} similarity to the positive",
        {"strategy": "topk", "max_positive_similarity": POSITIVE_SIMILARITY}),
    Arm("g", "(g) c where the teacher ranks the positive first, else top-k (the default)",
        {"confident_within": CONFIDENT_WITHIN}),
    Arm("h", "(h) f and g together", {"confident_within": CONFIDENT_WITHIN,
                                      "max_positive_similarity": POSITIVE_SIMILARITY}),
)}


def hp_tag(steps: int, lr: float, negatives: int) -> str:
    return f"st{steps}-lr{lr:g}-n{negatives}"


def run_name(teacher: str, arm: Arm, tag: str, seed: int) -> str:
    return f"abl-{'none' if arm.selection is None else teacher}-{arm.key}-{tag}-s{seed}"


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def prepare_data(catalog: Catalog) -> tuple[str, list[str]]:
    """Corpus and examples from the embedded vital articles (unchanged inputs are skipped)."""
    spec = load_task_set(DEFAULT_TASK_SPEC)
    build_wiki(WikiBuildConfig(name=spec.corpus or spec.name), catalog)
    build_tasks(spec, catalog)
    return spec.name, [t.name for t in spec.tasks if t.type == RETRIEVAL]


def cmd_mine(args, catalog: Catalog) -> None:
    examples, tasks = prepare_data(catalog)
    for key in args.arms.split(","):
        arm = ARMS[key]
        for seed in (seeds_of(args.seeds) if key == "d" else [0]):
            name = arm.negatives_name(args.teacher, args.negatives, seed)
            if arm.selection is None or not arm.applies_to(args.teacher) or catalog.latest("negatives", name):
                continue
            started = time.perf_counter()
            cfg = MineConfig(examples=examples, tasks=tuple(tasks), name=name,
                             teacher=TeacherSpec(teacher=TEACHERS[args.teacher]),
                             selection=arm.config(args.negatives, seed),
                             class_selection=SelectionConfig(strategy="topk", num_negatives=args.negatives),
                             judge=JudgeSpec(model=arm.judge) if arm.judge else None)
            print(mine(cfg, catalog).summary().splitlines()[-1], flush=True)
            record(catalog, {"part": "mine", "teacher": args.teacher, "arm": key, "negatives": name,
                             "wall_s": round(time.perf_counter() - started, 1)})


def cmd_common(args, catalog: Catalog) -> None:
    """examples/abl-train: the train-split retrieval queries every named arm gives k negatives."""
    import pyarrow as pa
    import pyarrow.compute as pc

    examples, tasks = prepare_data(catalog)
    ex_m = catalog.manifest("examples", examples)
    table = catalog.read_table("examples", examples, ex_m.version)
    train_rows = table.filter(pc.and_(pc.equal(table.column("split"), "train"),
                                      pc.is_in(table.column("task"), pa.array(tasks))))
    keep = set(train_rows.column("example_id").to_pylist())
    for teacher in args.teachers.split(","):
        for key in args.arms.split(","):
            if ARMS[key].selection is None or not ARMS[key].applies_to(teacher):
                continue
            name = ARMS[key].negatives_name(teacher, args.negatives, 0)
            negs = catalog.read_table("negatives", name, catalog.latest("negatives", name), columns=["example_id"])
            counts = pc.value_counts(negs.column("example_id")).to_pylist()
            full = {c["values"] for c in counts if c["counts"] >= args.negatives}
            print(f"{name}: {len(keep - full)} of the remaining train queries have fewer than {args.negatives}")
            keep &= full
    common = train_rows.filter(pc.is_in(train_rows.column("example_id"), pa.array(sorted(keep))))
    m = catalog.write_table("examples", TRAIN_EXAMPLES, common, config={**ex_m.config, "built_by": "ablation common",
                                                                        "arms": args.arms, "teachers": args.teachers},
                            inputs=[ex_m.input_ref(), *[i for i in ex_m.inputs if i.kind == "corpus"]],
                            skip_if_unchanged=True)
    print(f"examples/{TRAIN_EXAMPLES} {m.version}: {common.num_rows} of {train_rows.num_rows} train queries")


def train_run(catalog: Catalog, base, teacher: str, arm: Arm, seed: int, args) -> str:
    tag = hp_tag(args.steps, args.lr, args.negatives)
    name = run_name(teacher, arm, tag, seed)
    negatives = None if arm.selection is None else arm.negatives_name(teacher, args.negatives, seed)
    export_shards(ExportConfig(name=name, examples=TRAIN_EXAMPLES, negatives=negatives, training_stage=1,
                               global_batch=base.global_batch, workers=base.num_workers,
                               num_negatives=args.negatives if negatives else 0, seed=seed), catalog)
    cfg = replace(base, run_name=name, shards=name, max_steps=args.steps, lr=args.lr, seed=seed)
    state = run_state(cfg, catalog)
    if state.finished:
        return name
    if state.done is None:
        discard_uncheckpointed_run(cfg, catalog)
    started = time.perf_counter()
    result = train(cfg, catalog, resume=state.done is not None)
    record(catalog, {"part": "train", "run": name, "wall_s": round(time.perf_counter() - started, 1),
                     "loss": result.metrics.get("loss")})
    return name


def cmd_train(args, catalog: Catalog) -> None:
    examples, tasks = prepare_data(catalog)
    base = load_train_config(args.train_config)
    done = {(r["run"], r["split"]) for r in results(catalog) if r["part"] == "score"}
    tag = hp_tag(args.steps, args.lr, args.negatives)
    for seed in seeds_of(args.seeds):
        for key in args.arms.split(","):
            arm = ARMS[key]
            if not arm.applies_to(args.teacher):
                continue
            name = train_run(catalog, base, args.teacher, arm, seed, args)
            if (name, args.split) in done:
                continue
            started = time.perf_counter()
            result = evaluate(EvalConfig(models=[name], examples=examples, split=args.split, tasks=tasks), catalog)
            scores = {task: result.models[0].value(task, metric) for task, metric in result.main_scores()}
            record(catalog, {"part": "score", "run": name, "split": args.split, "teacher":
                             "none" if arm.selection is None else args.teacher, "arm": key, "seed": seed, "hp": tag,
                             "scores": scores, "wall_s": round(time.perf_counter() - started, 1)})
            print(f"{name} on {args.split}: {scores}", flush=True)


def cmd_baselines(args, catalog: Catalog) -> None:
    """The teachers as they mined (bare queries), scored on the split."""
    examples, tasks = prepare_data(catalog)
    done = {(r["model"], r["split"]) for r in results(catalog) if r["part"] == "baseline"}
    for model in TEACHERS.values():
        if (model, args.split) in done:
            continue
        result = evaluate(EvalConfig(models=[model], examples=examples, split=args.split, tasks=tasks), catalog)
        record(catalog, {"part": "baseline", "model": model, "split": args.split,
                         "scores": {t: result.models[0].value(t, m) for t, m in result.main_scores()}})


AUDIT_SQL = """
select n.task, coalesce(r.reason, 'kept') as what_{arm}_did, count(*) as naive_negatives,
       round(avg(n.neg_score), 3) as mean_score, round(avg(n.neg_score / n.positive_score), 3) as score_over_positive
from negatives n left join rejections r
  on r.dataset = '{arm_name}' and r.example_id = n.example_id and r.cand_id = n.neg_id
where n.dataset = '{naive}'
group by all order by 1, 3 desc
"""
SAMPLE_SQL = """
select n.task, n.query, n.neg_text as naive_negative, round(n.neg_score, 3) as score,
       round(n.positive_score, 3) as positive
from negatives n join rejections r
  on r.dataset = '{arm_name}' and r.example_id = n.example_id and r.cand_id = n.neg_id
where n.dataset = '{naive}' and r.reason = '{reason}'
order by hash(n.example_id || n.neg_id) limit {n}
"""


def cmd_audit(args, catalog: Catalog) -> None:
    """What each arm's rules took out of the naive top-k (arm b), per teacher, with samples."""
    from storage import print_query

    for teacher in args.teachers.split(","):
        naive = ARMS["b"].negatives_name(teacher, args.negatives, 0)
        for key in args.arms.split(","):
            arm = ARMS[key]
            if key in ("a", "b", "d") or not arm.applies_to(teacher):
                continue
            name = arm.negatives_name(teacher, args.negatives, 0)
            print(f"\n### {teacher}: what {arm.label} did to the naive top-{args.negatives} ({naive})")
            print_query(catalog, AUDIT_SQL.format(arm=key, arm_name=name, naive=naive))
            for reason in ("above_threshold", "similar_to_positive"):
                print(f"\nsamples it rejected as {reason}:")
                print_query(catalog, SAMPLE_SQL.format(arm_name=name, naive=naive, reason=reason, n=args.samples))


def record(catalog: Catalog, row: dict) -> None:
    results_log.record(catalog, "ablation", row)


def results(catalog: Catalog) -> list[dict]:
    return results_log.results(catalog, "ablation")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("mine", "common", "train", "baselines", "report", "audit"))
    p.add_argument("--root", default=os.environ.get("QUARRY_HOME", "quarry-data"), help="data root")
    p.add_argument("--teacher", choices=sorted(TEACHERS), default="minilm")
    p.add_argument("--teachers", default="minilm,mpnet", help="common: the teachers whose arms fix the query set")
    p.add_argument("--arms", default="b,c,d,e,f,g,h")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,1,2")
    p.add_argument("--split", default="test", choices=("dev", "test"))
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--negatives", type=int, default=4, help="hard negatives per query (default 4, as NV-Retriever's "
                                                            "ablations)")
    p.add_argument("--train-config", default=DEFAULT_TRAIN_CONFIG, help="the student (default %(default)s)")
    p.add_argument("--markdown", help="report: also write the tables here")
    p.add_argument("--pairs", default="c-a,c-b", help="report: paired differences to show, e.g. c-a,c-b,g-b")
    p.add_argument("--samples", type=int, default=4, help="audit: pairs shown per arm and reason")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="quarry: %(message)s", stream=sys.stderr)
    from pipelines.cli.console import quiet_libraries

    for noisy in ("faiss", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
    quiet_libraries()
    catalog = Catalog(args.root)
    if args.part == "report":
        from ablation_report import report  # beside this script

        text = report(results(catalog), args.split, args.pairs.split(","), ARMS)
        print(text)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return
    p_parts = {"mine": cmd_mine, "common": cmd_common, "train": cmd_train, "baselines": cmd_baselines,
               "audit": cmd_audit}
    p_parts[args.part](args, catalog)


if __name__ == "__main__":
    main()
