"""The commands that build and inspect data: ``run``, ``build wiki``, ``build tasks``,
``refresh``, ``datasets``, ``show``, ``verify`` and ``query``. Tested through the real CLI
by ``tests/pipelines/cli/test_cli_errors.py`` and ``tests/pipelines/cli/test_cli_e2e.py``."""

from __future__ import annotations

from pipelines.builders.beir import BeirBuildConfig
from pipelines.builders.corpus import WikiBuildConfig
from pipelines.builders.sources import SOURCE_KINDS, SourceConfig
from pipelines.cli.options import Command, build, parse_columns
from pipelines.run import MainJobConfig
from storage import Catalog, print_query
from storage.render import QUERY_FORMATS, format_datasets, format_manifest

TABLE_ROWS = 40  # rows `quarry query` shows in a terminal table


def cmd_run(args, catalog: Catalog) -> None:
    from pipelines.run import run_main_job

    run_main_job(build(MainJobConfig, spec=args.spec, train_config=args.train_config, limit=args.limit), catalog)


def cmd_build_wiki(args, catalog: Catalog) -> None:
    from pipelines.builders.corpus import build_wiki

    source = build(SourceConfig, "source", kind=args.source, lang=args.lang, hf_name=args.hf_name,
                   hf_config=args.hf_config, hf_split=args.hf_split, streaming=not args.no_streaming, paths=args.path,
                   format=args.format, columns=parse_columns(args.columns), limit=args.limit, label=args.source_label)
    cfg = build(WikiBuildConfig, name=args.name, source=source, passage_chars=args.passage_chars,
                passage_tokens=args.passage_tokens, tokenizer=args.tokenizer, title_in_text=args.title_in_text)
    print(build_wiki(cfg, catalog).summary())


def cmd_build_beir(args, catalog: Catalog) -> None:
    from pipelines.builders.beir import build_beir

    for result in build_beir(build(BeirBuildConfig, folder=args.folder, name=args.name,
                                   instruction=args.instruction), catalog):
        print(result.summary())


def cmd_build_tasks(args, catalog: Catalog) -> None:
    from pipelines.builders.task_spec import load_task_set
    from pipelines.builders.tasks import build_tasks

    print(build_tasks(load_task_set(args.spec), catalog, limit=args.limit).summary())


def cmd_refresh(args, catalog: Catalog) -> None:
    from pipelines.builders.refresh import RefreshConfig, refresh

    print(refresh(build(RefreshConfig, only=tuple(args.only)), catalog).summary())


def cmd_datasets(args, catalog: Catalog) -> None:
    if not args.gc:
        print(format_datasets(catalog, args.kind, args.versions))
        return
    removed = catalog.gc()
    print(f"removed {len(removed)} stale staging or uncommitted directories")
    for path in removed:
        print(f"  {path}")


def cmd_show(args, catalog: Catalog) -> None:
    print(format_manifest(catalog, args.kind, args.name, args.version))


def cmd_verify(args, catalog: Catalog) -> None:
    m = catalog.verify(args.kind, args.name, args.version)
    print(f"{args.kind}/{args.name} {m.version}: {len(m.files)} file(s) match their recorded size and sha256")


def cmd_query(args, catalog: Catalog) -> None:
    print_query(catalog, args.sql, args.at, args.format, args.out, args.max_rows)


def add_commands(sub) -> None:
    run = Command(sub.add_parser("run", help="the main job: corpus, tasks, hard negatives, shards, CPU demo "
                                             "training, evaluation and a verdict"), cmd_run)
    run.option("--limit", "limit", type=int, help="first N articles only (quick trials)")
    run.option("--spec", "spec", cls=MainJobConfig, help="task spec (default %(default)s)")
    run.option("--train-config", "train_config", cls=MainJobConfig, help="training config (default %(default)s)")
    build_cmd = sub.add_parser("build", help="build a dataset").add_subparsers(dest="what", required=True,
                                                                             metavar="WHAT")
    _add_build_wiki(build_cmd)
    beir = Command(build_cmd.add_parser("beir", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) "
                                                     "as a corpus and a retrieval task"), cmd_build_beir)
    beir.option("folder", "folder", help="the BEIR folder")
    beir.option("--name", "name", required=True, help="names corpus/NAME, examples/NAME and the task")
    beir.option("--instruction", "instruction", cls=BeirBuildConfig, help="the task's instruction (default "
                                                                          "%(default)r)")
    tasks = Command(build_cmd.add_parser("tasks", help="instruction-task datasets from a spec"), cmd_build_tasks)
    tasks.option("--spec", cls=MainJobConfig, field="spec", help="task spec YAML (default %(default)s)")
    tasks.option("--limit", type=int, help="first N source rows per task")
    rf = Command(sub.add_parser("refresh", help="rebuild every corpus from its recorded source, then the examples "
                                                "built on it, printing what changed"), cmd_refresh)
    rf.option("--only", "only", action="append", default=[], metavar="KIND/NAME",
              help="only this dataset (corpus/NAME also rebuilds the examples built on it; repeatable)")
    _add_catalog_commands(sub)


def _add_build_wiki(build_cmd) -> None:
    wiki = Command(build_cmd.add_parser("wiki", help="a corpus: the embedded Wikipedia, a Hugging Face dataset or "
                                                     "local files"), cmd_build_wiki)
    wiki.option("--name", "name", cls=WikiBuildConfig, help="corpus dataset name (default %(default)s)")
    wiki.option("--source", "source.kind", cls=SourceConfig, choices=SOURCE_KINDS,
                help="embedded vital articles, a Hugging Face dataset, or local files (default %(default)s)")
    wiki.option("--lang", "source.lang", cls=SourceConfig, help="embedded: en, es or fr; others: the language of "
                                                                "rows without one (default %(default)s)")
    wiki.option("--hf-name", "source.hf_name", help="Hugging Face dataset, e.g. wikimedia/wikipedia")
    wiki.option("--hf-config", "source.hf_config", help="its config, e.g. 20231101.en")
    wiki.option("--hf-split", "source.hf_split", cls=SourceConfig, help="its split (default %(default)s)")
    wiki.option("--no-streaming", "source.streaming", action="store_true", help="download the whole HF dataset first")
    wiki.option("--path", "source.paths", action="append", default=[],
                help="input file (repeatable): JSONL or Parquet")
    wiki.option("--format", "source.format", choices=["jsonl", "parquet"], help="file format (default: from extension)")
    wiki.option("--columns", "source.columns", help="column mapping target=source,... (targets: title, text, id, "
                                                    "lang, or any metadata name), e.g. title=name,text=body,id=page_id")
    wiki.option("--source-label", "source.label", help="provenance label; part of every doc_id")
    wiki.option("--limit", "source.limit", type=int, help="first N documents (deterministic)")
    wiki.option("--passage-chars", "passage_chars", type=int, help="split texts into passages of at most N characters")
    wiki.option("--passage-tokens", "passage_tokens", type=int, help="split texts into passages of at most N tokens")
    wiki.option("--tokenizer", "tokenizer", help="tokenizer path for --passage-tokens")
    wiki.option("--title-in-text", "title_in_text", action="store_true",
                help="begin each text with its title, as mteb encodes a BEIR document")


def _add_catalog_commands(sub) -> None:
    ds = Command(sub.add_parser("datasets", help="list the catalog"), cmd_datasets)
    ds.option("--kind", help="only this kind (corpus, examples, ...)")
    ds.option("--versions", action="store_true", help="one line per version")
    ds.option("--gc", action="store_true", help="remove staging and uncommitted versions left by crashed writers "
                                                "(only while no build is running)")
    for name, handler, what in (("show", cmd_show, "print a version's manifest (provenance, stats)"),
                                ("verify", cmd_verify, "check a version's files against the sha256 its manifest "
                                                       "recorded")):
        c = Command(sub.add_parser(name, help=what), handler)
        c.option("kind")
        c.option("name")
        c.option("--version", help="default: the latest")
    q = Command(sub.add_parser("query", help="read-only SQL (DuckDB) over the catalog"), cmd_query)
    q.option("sql")
    q.option("--at", action="append", default=[], metavar="KIND/NAME=VERSION",
             help="use this version instead of the latest (repeatable)")
    q.option("--format", choices=QUERY_FORMATS, help="output format (default: table, or from --out's extension)")
    q.option("--out", help="write the result to this file")
    q.option("--max-rows", type=int, default=TABLE_ROWS, help="rows shown in table format (default %(default)s)")

