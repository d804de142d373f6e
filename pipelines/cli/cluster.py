"""The cluster commands: ``submit`` (a quarry command as a Ray job) and ``jobs``. Tested by
``tests/pipelines/runtime/test_jobs.py`` and ``tests/pipelines/runtime/test_submit_ray.py``."""

from __future__ import annotations

import argparse
import os

from pipelines.cli.options import Command, build
from pipelines.runtime.jobs import DEFAULT_JOB_SERVER, REPO_ROOT, SubmitConfig
from storage import Catalog, QuarryError

ADDRESS_HELP = "Ray job server (default $RAY_API_SERVER_ADDRESS or %(default)s)"


def cmd_submit(args, catalog: Catalog) -> int:
    from pipelines.runtime.jobs import job_client, parse_env, submit

    command = tuple(args.job_command[1:] if args.job_command[:1] == ["--"] else args.job_command)
    root = args.root or os.environ.get("QUARRY_HOME")
    if not root:
        raise QuarryError("quarry submit needs a data root every node of the cluster reaches: "
                          "quarry --root s3://bucket/prefix submit -- ... (or export QUARRY_HOME)")
    cfg = build(SubmitConfig, command=command, root=root, address=args.address,
                working_dir=os.path.abspath(args.working_dir), env=parse_env(args.env), wait=not args.no_wait,
                submission_id=args.submission_id)
    return submit(cfg, job_client(cfg.address, verbose=args.verbose))


def cmd_jobs(args, catalog: Catalog) -> None:
    from pipelines.runtime import jobs

    if args.action is not None and args.job_id is None:
        raise QuarryError(f"quarry jobs {args.action} needs a job id (quarry jobs lists them)")
    client = jobs.job_client(args.address, verbose=args.verbose)
    if args.action is None:
        jobs.list_jobs(client)
    elif args.action == "logs":
        jobs.job_logs(client, args.job_id, follow=args.follow)
    else:
        jobs.stop_job(client, args.job_id)


def add_commands(sub) -> None:
    address = os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_JOB_SERVER
    sm = Command(sub.add_parser("submit", help="run a quarry command as a Ray job on a cluster, following its logs"),
                 cmd_submit)
    sm.option("--address", "address", default=address, help=ADDRESS_HELP)
    sm.option("--working-dir", "working_dir", default=REPO_ROOT,
              help="code uploaded with the job (default: this checkout)")
    sm.option("--env", "env", action="append", default=[], metavar="NAME=VALUE",
              help="environment variable for the job")
    sm.option("--no-wait", "wait", action="store_true", help="print the job id and return")
    sm.option("--submission-id", "submission_id", help="job id to use (default: Ray picks one)")
    sm.option("job_command", "command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
              help="the quarry command, e.g. -- mine --tasks vital-desc2article")
    jb = Command(sub.add_parser("jobs", help="list the cluster's jobs; logs or stop one"), cmd_jobs)
    jb.option("action", nargs="?", choices=("logs", "stop"))
    jb.option("job_id", nargs="?")
    jb.option("--follow", action="store_true", help="logs: follow until the job ends")
    jb.option("--address", default=address, help=ADDRESS_HELP)
