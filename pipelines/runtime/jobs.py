"""``quarry submit`` and ``quarry jobs``: Quarry commands as Ray jobs, through Ray's own Job
Submission SDK (``ray.job_submission.JobSubmissionClient``).

A job runs ``python -m pipelines.cli [--root R] <command>`` on the cluster with this
repository as its ``working_dir``. Ray puts the working directory first on the job's
PYTHONPATH, so the cluster runs the code you submitted, not whatever Quarry is installed
there; the cluster's Python still needs Quarry's dependencies (see docs/cluster.md).
Ray uploads the working directory without ``.git``, ``.venv`` and what ``.gitignore`` lists
(the default data root among them). The job's ``python`` is the first on the cluster's PATH:
start Ray there from the environment Quarry is installed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import shlex
import sys
import time
from typing import Iterable

from storage import QuarryError

DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
# pipelines/runtime/jobs.py -> the checkout that holds it
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_MARKER = os.path.join("pipelines", "cli", "__main__.py")  # what makes a folder a Quarry checkout
# A job's status -> the exit status of `quarry submit` when the driver left none.
EXIT_FOR_STATUS = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}
AGENT_WAIT_S = 60.0  # how long a submission waits for a just-started head to take jobs


@dataclasses.dataclass(frozen=True)
class SubmitConfig:
    command: tuple[str, ...]  # a quarry subcommand and its arguments, e.g. ("mine", "--tasks", "x")
    root: str  # data root the job uses: an object store URI or a path every node sees
    address: str = DEFAULT_JOB_SERVER
    working_dir: str = REPO_ROOT
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables for the job
    wait: bool = True  # follow the logs and return the job's exit status
    submission_id: str | None = None

    def __post_init__(self):
        if not self.command:
            raise QuarryError("quarry submit: give the quarry command after --, e.g. "
                              "quarry submit --root s3://bucket/q -- mine")
        if self.command[0] in ("submit", "jobs"):
            raise QuarryError(f"quarry submit: {self.command[0]!r} cannot run as a job")
        if "://" not in self.root and not os.path.isabs(self.root):
            raise QuarryError(f"quarry submit: --root {self.root!r} is relative; a job runs in a "
                              "temporary working directory on the cluster. Give an object store URI "
                              "(s3://...) or an absolute path every node shares")
        if not os.path.isfile(os.path.join(self.working_dir, CLI_MARKER)):
            raise QuarryError(f"quarry submit: --working-dir {self.working_dir} is not a Quarry "
                              f"checkout (no {CLI_MARKER})")

    @property
    def entrypoint(self) -> str:
        return shlex.join(["python", "-m", "pipelines.cli", "--root", self.root, *self.command])

    @property
    def runtime_env(self) -> dict:
        return {"working_dir": self.working_dir, "env_vars": dict(self.env)}


def parse_env(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QuarryError(f"bad --env {item!r}: expected NAME=VALUE")
        out.append((key, value))
    return tuple(out)


def job_client(address: str, verbose: bool = False):
    # Ray 2.60 clusters have token authentication on by default; the client then needs
    # RAY_AUTH_MODE=token to send the token (~/.ray/auth_token or $RAY_AUTH_TOKEN). Set it
    # before Ray is imported (Ray caches it); an exported value, e.g. disabled, wins.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not verbose:
        # The SDK logs each upload and each closed log stream at INFO (it sets its loggers to
        # INFO on import), and warns that it leaves .git and .venv out: none of it is news.
        for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                     "ray._private.runtime_env.working_dir", "ray._private.runtime_env.packaging"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as e:
        raise QuarryError(f"the Ray job server at {address} refused this client: {first_message_line(str(e))} "
                          "(export RAY_AUTH_TOKEN, or put the cluster's token in ~/.ray/auth_token: "
                          "`ray get-auth-token` on the head prints it)") from e
    except (ConnectionError, RuntimeError) as e:
        raise QuarryError(f"cannot reach the Ray job server at {address}: {str(e).splitlines()[0]} "
                          "(start one with `ray start --head --dashboard-host=127.0.0.1`, or pass "
                          "--address)") from e


def submit(cfg: SubmitConfig, client, out=sys.stdout) -> int:
    """Submit the job; with ``wait``, follow its logs and return its exit status."""
    job_id = submit_when_ready(client, entrypoint=cfg.entrypoint, runtime_env=cfg.runtime_env,
                               submission_id=cfg.submission_id,
                               metadata={"quarry_command": shlex.join(cfg.command)})
    if not cfg.wait:
        print(job_id, file=out)
        return 0
    print(f"quarry: submitted {job_id} to {cfg.address}: {cfg.entrypoint}", file=sys.stderr)
    try:
        follow_logs(client, job_id, out)
    except KeyboardInterrupt:
        print(f"quarry: stopped following {job_id}; it keeps running (quarry jobs stop {job_id})",
              file=sys.stderr)
        return 130
    return finished_status(client, job_id)


def submit_when_ready(client, wait_s: float = AGENT_WAIT_S, **job) -> str:
    """``client.submit_job``, retried while the head says no agent can take jobs yet: a head
    answers so for some seconds after `ray start` returns (seen here on 2 cores)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def follow_logs(client, job_id: str, out) -> None:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())


def finished_status(client, job_id: str) -> int:
    info = client.get_job_info(job_id)
    status = str(getattr(info.status, "value", info.status))
    code = EXIT_FOR_STATUS.get(status, 1)
    if status == "SUCCEEDED":
        print(f"quarry: job {job_id} succeeded", file=sys.stderr)
        return 0
    if info.driver_exit_code:  # the job's own status: 2 for bad input, 1 for a failure
        code = info.driver_exit_code
    reason = first_message_line(info.message)
    print(f"error: job {job_id} {status.lower()}" + (f": {reason}" if reason else ""), file=sys.stderr)
    return code


def first_message_line(message: str | None) -> str:
    """Ray's failure message, without the copy of the logs it appends (already followed)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[0].split(", last available logs")[0] if lines else ""


def list_jobs(client, out=sys.stdout) -> None:
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    if not jobs:
        print(f"no jobs on {client.get_address()}", file=out)
        return
    rows = [(j.submission_id or j.job_id or "-", str(getattr(j.status, "value", j.status)),
             _time(j.start_time), (j.metadata or {}).get("quarry_command") or j.entrypoint) for j in jobs]
    widths = [max(len(r[i]) for r in rows + [("id", "status", "started", "command")]) for i in range(3)]
    for row in [("id", "status", "started", "command")] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3], file=out)


def job_logs(client, job_id: str, follow: bool, out=sys.stdout) -> None:
    _check_job(client, job_id)
    if follow:
        follow_logs(client, job_id, out)
    else:
        out.write(client.get_job_logs(job_id))


def stop_job(client, job_id: str) -> None:
    _check_job(client, job_id)
    stopped = client.stop_job(job_id)
    print(f"quarry: {'stopping' if stopped else 'not running, nothing to stop:'} {job_id}", file=sys.stderr)


def _check_job(client, job_id: str) -> None:
    try:
        client.get_job_info(job_id)
    except RuntimeError as e:
        raise QuarryError(f"no job {job_id!r} on {client.get_address()}") from e


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
