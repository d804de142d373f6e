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

One module per group of commands (``data``, ``mining``, ``training``, ``evaluation``,
``cluster``), each holding its options and handlers; ``options`` ties options to config
fields, ``console`` is what the terminal shows.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipelines.cli import cluster, data, evaluation, mining, training
from pipelines.cli.console import configure_logging, report_unexpected, root_cause
from pipelines.cli.options import FLAGS_DEST, as_flags
from storage import Catalog, ConfigError, QuarryError, first_line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quarry", description="Data pipeline and hard-negative mining workbench for "
                                                           "NV-Embed-style embedding models.")
    p.add_argument("--root", help="data root (default $QUARRY_HOME or ./quarry-data); any pyarrow filesystem URI, "
                                  "e.g. s3://bucket/prefix")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and results")
    p.add_argument("-v", "--verbose", action="store_true", help="also Ray Data's own logs, and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (data, mining, training, evaluation, cluster):
        group.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    configure_logging(quiet=args.quiet, verbose=args.verbose)
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
        if isinstance(cause, ConfigError):
            print(f"error: {as_flags(cause, getattr(args, FLAGS_DEST, {}))}", file=sys.stderr)
            return 2
        if isinstance(cause, QuarryError):
            print(f"error: {first_line(cause)}", file=sys.stderr)
            return 2
        return report_unexpected(command, e, argv)
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
