"""``quarry mine``: its options, each read from ``MineConfig`` and the configs it nests.
Tested through the real CLI by ``tests/pipelines/cli/test_cli_errors.py``."""

from __future__ import annotations

from miners.index import INDEX_TYPES, IndexConfig
from miners.select import DEFAULT_MARGIN, SAMPLING, STRATEGIES, SelectionConfig
from miners.teacher import AUTO, PRECISIONS, TeacherSpec
from pipelines.cli.options import ENCODE_IN_HELP, ENCODERS_HELP, TASKS_HELP, Command, build, comma_list, default
from pipelines.mine.config import JUDGE_KINDS, JudgeSpec, MineConfig
from pipelines.runtime.encoding import ENCODE_IN
from storage import Catalog

# Options that set both selection configs: retrieval tasks' and class tasks'.
SHARED_SELECTION = ("shift", "num_negatives", "sampling", "sample_window", "seed")


def mine_config(args) -> MineConfig:
    common = dict(shift=args.shift, num_negatives=args.num_negatives, sampling=args.sampling,
                  sample_window=args.sample_window, seed=args.seed, drop_cross_positives=not args.keep_cross_positives)
    teacher = build(TeacherSpec, "teacher", teacher=args.teacher, revision=args.revision, max_length=args.max_length,
                    precision=args.teacher_precision)
    selection = build(SelectionConfig, "selection", strategy=args.strategy, margin=args.margin,
                      max_positive_similarity=args.max_positive_similarity,
                      confident_within=args.confident_within or None,  # 0: every query
                      **common)
    class_selection = build(SelectionConfig, "class_selection", strategy=args.class_strategy, margin=args.class_margin,
                            confident_within=None, **common)  # a class task's positive is any of its class
    index = build(IndexConfig, "index", kind=args.index, nlist=args.nlist, nprobe=args.nprobe,
                  train_per_list=args.train_per_list)
    judge = build(JudgeSpec, "judge", model=args.judge, kind=args.judge_kind, max_length=args.judge_max_length,
                  batch_size=args.judge_batch_size) if args.judge else None
    return build(MineConfig, examples=args.examples, tasks=comma_list(args.tasks), name=args.name, teacher=teacher,
                 selection=selection, class_selection=class_selection, depth=args.depth, index=index,
                 batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, query_prompt=args.query_prompt,
                 task_instructions=args.task_instructions, encoders=args.encoders, encode_in=args.encode_in,
                 reuse=not args.no_reuse, judge=judge)


def cmd_mine(args, catalog: Catalog) -> None:
    from pipelines.mine import mine

    print(mine(mine_config(args), catalog).summary())


def cmd_margins(args, catalog: Catalog) -> None:
    from pipelines.mine.margins import MarginsConfig, list_margins

    cfg = build(MarginsConfig, negatives=args.negatives, version=args.version, tasks=comma_list(args.tasks),
                strategy=args.strategy, start=args.start, stop=args.stop, step=args.step,
                num_negatives=args.num_negatives, samples=args.samples, plot=args.plot)
    print(list_margins(cfg, catalog).summary())
    if cfg.plot:
        print(f"wrote {cfg.plot}")


def _add_margins(sub) -> None:
    from pipelines.mine.margins import THRESHOLD_STRATEGIES, MarginsConfig

    c = Command(sub.add_parser("margins", help="how many of the naive top-k candidates each margin would reject, "
                                               "from a mine's stored rows (no encoding)"), cmd_margins)
    c.option("--negatives", "negatives", cls=MarginsConfig, help="negatives dataset (default %(default)s)")
    c.option("--version", "version", help="its version (default: the latest)")
    c.option("--tasks", "tasks", help="comma list (default: every task of the run)")
    c.option("--strategy", "strategy", cls=MarginsConfig, choices=THRESHOLD_STRATEGIES,
             help="whose margin to list (default %(default)s)")
    c.option("--from", "start", cls=MarginsConfig, dest="start", help="first margin (default %(default)s)")
    c.option("--to", "stop", cls=MarginsConfig, dest="stop", help="last margin (default %(default)s)")
    c.option("--step", "step", cls=MarginsConfig, help="between margins (default %(default)s)")
    c.option("--num-negatives", "num_negatives", type=int, help="k of the naive top-k (default: the run's)")
    c.option("--samples", "samples", cls=MarginsConfig, help="pairs shown per margin (default %(default)s)")
    c.option("--plot", "plot", help="also write the score plot with each margin's median threshold marked (PNG)")


def add_commands(sub) -> None:
    _add_margins(sub)
    c = Command(sub.add_parser("mine", help="mine hard negatives with a teacher retriever"), cmd_mine)
    c.option("--tasks", "tasks", help=TASKS_HELP.format("retrieval, classification and clustering"))
    c.option("--examples", "examples", cls=MineConfig, help="examples dataset to mine for (default %(default)s)")
    c.option("--name", "name", help="negatives dataset name (default: the examples name)")
    _add_teacher(c)
    _add_judge(c)
    _add_selection(c)
    _add_search(c)
    c.option("--batch-size", "batch_size", cls=MineConfig,
             help="most texts per teacher forward pass (default %(default)s)")
    c.option("--max-batch-tokens", "max_batch_tokens", type=int,
             help="padded tokens per teacher forward pass (default: the device's; 0: always --batch-size texts, as "
                  "sentence-transformers)")
    c.option("--encoders", "encoders", type=int, help=ENCODERS_HELP)
    c.option("--encode-in", "encode_in", cls=MineConfig, choices=ENCODE_IN, help=ENCODE_IN_HELP)
    c.option("--no-reuse", "reuse", action="store_true",
             help="search every query again, even those a change since the last mine of this name cannot reach "
                  "(by default they keep their negatives)")


def _add_teacher(c: Command) -> None:
    c.option("--teacher", "teacher.teacher", cls=TeacherSpec,
             help="sentence-transformers model: a local folder, a hub id or a packaged model (default %(default)s)")
    c.option("--revision", "teacher.revision",
             help="hub branch, tag or commit of the teacher (default main, resolved to its commit)")
    c.option("--max-length", "teacher.max_length", type=int, help="teacher max tokens (default: the model's own)")
    c.option("--teacher-precision", "teacher.precision", cls=TeacherSpec, choices=(AUTO, *PRECISIONS),
             help="how the teacher computes (default %(default)s: bf16 on a CPU with native bf16, else fp32). Part "
                  "of the embedding cache key")
    c.option("--query-prompt", "query_prompt", cls=MineConfig, help="prefix for queries, e.g. 'query: ' for E5")
    c.option("--task-instructions", "task_instructions", action="store_true",
             help="prefix queries with their task instruction (instruction-following teachers)")


def _add_judge(c: Command) -> None:
    c.option("--judge", "judge.model",
             help="a second model that rescores the teacher's candidates and the positives; the score rules "
                  "(--strategy's threshold) then read its scores (default: none)")
    c.option("--judge-kind", "judge.kind", default=default(JudgeSpec, "kind"), choices=JUDGE_KINDS,
             help="bi-encoder: a sentence-transformers model (cached like the teacher); cross-encoder: a "
                  "CrossEncoder reading query and passage together (default %(default)s)")
    c.option("--judge-max-length", "judge.max_length", type=int, help="judge max tokens (default: the model's own)")
    c.option("--judge-batch-size", "judge.batch_size", default=default(JudgeSpec, "batch_size"), type=int,
             help="cross-encoder pairs per forward pass (default %(default)s)")


def _add_selection(c: Command) -> None:
    c.option("--strategy", "selection.strategy", cls=SelectionConfig, choices=STRATEGIES,
             help="strategy for retrieval tasks (default %(default)s)")
    margins = ", ".join(f"{k} {v}" for k, v in DEFAULT_MARGIN.items() if v is not None)
    c.option("--margin", "selection.margin", type=float, help=f"threshold parameter of --strategy; defaults: {margins}")
    c.option("--max-positive-similarity", "selection.max_positive_similarity", type=float,
             help="retrieval tasks: also drop a candidate whose teacher similarity to a positive document is above "
                  "this, whatever it scores for the query (a paraphrase of the positive; default off)")
    c.option("--confident-within", "selection.confident_within", cls=SelectionConfig,
             help="retrieval tasks: apply --strategy's threshold only to queries whose positive the teacher ranks in "
                  "its first N candidates; elsewhere take the top-ranked eligible (default %(default)s; 0: every "
                  "query)")
    c.option("--class-strategy", "class_selection.strategy", default=default(MineConfig, "class_selection").strategy,
             choices=STRATEGIES, help="strategy for classification and clustering tasks (default %(default)s: the "
                                      "same-class filter already removes their false negatives)")
    c.option("--class-margin", "class_selection.margin", type=float, help="threshold parameter of --class-strategy")
    both = [f"{which}.{name}" for name in SHARED_SELECTION for which in ("selection", "class_selection")]
    c.option("--shift", both[0:2], cls=SelectionConfig, type=int,
             help="topk_shift: eligible ranks skipped (default %(default)s)")
    c.option("--num-negatives", both[2:4], cls=SelectionConfig, type=int, help="negatives per query (default "
                                                                               "%(default)s)")
    c.option("--sampling", both[4:6], cls=SelectionConfig, choices=SAMPLING,
             help="top: the best-ranked eligible; random: a seeded draw (default %(default)s)")
    c.option("--sample-window", both[6:8], type=int, help="random sampling: draw from the first W eligible")
    c.option("--seed", both[8:10], cls=SelectionConfig, type=int, help="random sampling's seed (default %(default)s)")
    c.option("--keep-cross-positives", ("selection.drop_cross_positives", "class_selection.drop_cross_positives"),
             action="store_true",
             help="allow positives of other queries with the same text as negatives (off by default)")


def _add_search(c: Command) -> None:
    c.option("--depth", "depth", cls=MineConfig, type=int, help="teacher top-k searched per query (default "
                                                                "%(default)s)")
    c.option("--index", "index.kind", cls=IndexConfig, choices=INDEX_TYPES, help="FAISS index (default %(default)s: "
                                                                                 "exact)")
    c.option("--nlist", "index.nlist", type=int, help="ivf: number of lists (default about 4 x sqrt(pool size))")
    c.option("--nprobe", "index.nprobe", cls=IndexConfig, type=int,
             help="ivf: lists searched per query (default %(default)s)")
    c.option("--train-per-list", "index.train_per_list", cls=IndexConfig, type=int,
             help="ivf: k-means training points per list, sampled (default %(default)s; FAISS's own: 256)")
