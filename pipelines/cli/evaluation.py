"""The commands that use a model: ``eval`` (mteb scores), ``encode`` (embeddings of a
file) and ``export-model`` (a model rewritten for plain sentence-transformers). Tested through the real CLI by ``tests/pipelines/cli/test_cli_errors.py`` and
``tests/pipelines/evaluate/test_eval_ray.py``."""

from __future__ import annotations

import os

from miners.teacher import AUTO, PRECISIONS
from pipelines.cli.options import ENCODE_IN_HELP, ENCODERS_HELP, TASKS_HELP, Command, build, comma_list, int_list
from pipelines.evaluate.encode import EncodeConfig
from pipelines.evaluate.scoring import EvalConfig
from pipelines.runtime.encoding import ENCODE_IN
from storage import Catalog


def cmd_encode(args, catalog: Catalog) -> None:
    from pipelines.evaluate.encode import encode_file

    cfg = build(EncodeConfig, model=_model_folder(args.model, catalog), input=args.input,
                out=args.out, text_column=args.text_column, instruction=args.instruction, batch_size=args.batch_size)
    print(f"wrote {encode_file(cfg)} embeddings to {cfg.out}")


def _model_folder(name: str, catalog: Catalog) -> str:
    """A folder as given, or a run name's model under <root>/models (copied to the local cache
    from an object store)."""
    from storage.published import fetch_dir, saved_model

    saved = None if os.path.isdir(name) else saved_model(catalog.root, name)
    return fetch_dir(catalog.root, saved) if saved else name


def cmd_export_model(args, catalog: Catalog) -> None:
    from storage import InputError
    from trainers.convert import convert

    texts = None
    if args.texts:
        try:
            with open(args.texts, encoding="utf-8") as f:
                texts = [line.strip() for line in f if line.strip()][:256]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--texts {args.texts}: {e}") from None
        if not texts:
            raise InputError(f"--texts {args.texts}: no text in the file")
    print(convert(_model_folder(args.model, catalog), args.out, texts).summary(args.out))


def cmd_eval(args, catalog: Catalog) -> None:
    from pipelines.evaluate import evaluate

    cfg = build(EvalConfig, models=[*(args.models or []), *(args.compare or [])], examples=args.examples,
                examples_version=args.examples_version, split=args.split, tasks=list(comma_list(args.tasks)),
                batch_size=args.batch_size, max_length=args.max_length, query_prompt=args.query_prompt,
                encoders=args.encoders, encode_in=args.encode_in, max_batch_tokens=args.max_batch_tokens,
                write=not args.no_write, with_parents=args.with_parent, precision=args.precision,
                dims=int_list(args.dims, "--dims"))
    print(evaluate(cfg, catalog).summary())


def add_commands(sub) -> None:
    en = Command(sub.add_parser("encode", help="embed texts with a trained (or any) model"), cmd_encode)
    en.option("--model", "model", required=True,
              help="a run name with a model under <root>/models, a saved Quarry model folder, or a backbone path")
    en.option("--input", "input", required=True, help="JSONL, Parquet or plain text (one text per line)")
    en.option("--out", "out", required=True, help="output Parquet: the input columns + embedding")
    en.option("--text-column", "text_column", cls=EncodeConfig, help="the column of texts (default %(default)s)")
    en.option("--instruction", "instruction", help="instruction prefix for every text (queries)")
    en.option("--batch-size", "batch_size", cls=EncodeConfig, help="texts per forward pass (default %(default)s)")
    ex = Command(sub.add_parser("export-model", help="rewrite a model saved by an older Quarry so that plain "
                                                     "sentence-transformers loads it; checks and reports its vectors"),
                 cmd_export_model)
    ex.option("model", metavar="MODEL", help="a saved Quarry model folder, or a run name under <root>/models")
    ex.option("out", metavar="NEW", help="the folder to write (must not exist)")
    ex.option("--texts", "texts", help="a text file, one text per line (first 256), to measure the drift on "
                                       "(default: a few built-in sentences)")
    _add_eval(sub)


def _add_eval(sub) -> None:
    ev = Command(sub.add_parser("eval", help="score models on an examples split with mteb's evaluators"), cmd_eval)
    ev.option("--model", "models", action="append", dest="models", metavar="MODEL",
              help="a saved Quarry model (folder, or run name under <root>/models), a sentence-transformers folder "
                   "or hub id, or packaged:all-MiniLM-L6-v2; repeat to compare")
    ev.option("--compare", nargs="+", metavar="MODEL",
              help="models to score side by side (same as repeating --model)")
    ev.option("--examples", "examples", cls=EvalConfig, help="examples dataset (default %(default)s)")
    ev.option("--examples-version", "examples_version", help="examples version (default: the latest)")
    ev.option("--split", "split", cls=EvalConfig, help="split to score (default %(default)s)")
    ev.option("--tasks", "tasks", help=TASKS_HELP.format("retrieval, classification, clustering and STS"))
    ev.option("--batch-size", "batch_size", cls=EvalConfig, help="texts per forward pass at most (default "
                                                                 "%(default)s)")
    ev.option("--max-batch-tokens", "max_batch_tokens", type=int,
              help="padded tokens per forward pass (default: the device's)")
    ev.option("--max-length", "max_length", type=int, help="tokens per text (default: each model's own)")
    ev.option("--precision", "precision", cls=EvalConfig, choices=(AUTO, *PRECISIONS),
              help="sentence-transformers models: as quarry mine --teacher-precision (default %(default)s), so the "
                   "teacher is scored on the vectors it mined with")
    ev.option("--query-prompt", "query_prompt", cls=EvalConfig,
              help="sentence-transformers models: prefix of query-side texts (default: none, as the teacher mined)")
    ev.option("--encoders", "encoders", type=int, help=ENCODERS_HELP)
    ev.option("--encode-in", "encode_in", cls=EvalConfig, choices=ENCODE_IN, help=ENCODE_IN_HELP)
    ev.option("--with-parent", "with_parents", action="store_true",
              help="also score each model's parent (the model it was trained from with --init-from), on the same "
                   "split, side by side")
    ev.option("--dims", "dims", help="also score the renormalised first N dimensions of each model's vectors "
                                     "(Matryoshka), e.g. 64,128,256")
    ev.option("--no-write", "write", action="store_true", help="print only: no eval.json, no evals dataset version")
