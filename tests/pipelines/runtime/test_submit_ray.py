"""``quarry submit`` / ``quarry jobs`` and plain ``ray job submit`` against a real Ray head
started on loopback, with token authentication on (Ray 2.60's default), as docs/cluster.md
starts one. The submitting commands run as separate processes, as a user runs them."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from pipelines.builders.sources import load_embedded_table
from storage import Catalog
from tests.pipelines.ray_procs import is_loopback, listeners, processes_of, stop
from tests.pipelines.small_source import SMALL_COLUMNS, SMALL_SPEC, write_jsonl

pytestmark = pytest.mark.integration  # starts Ray or child processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with its own token; stopped by killing its own processes
    (``ray stop`` would stop every Ray of this user on the machine)."""
    temp_dir = tempfile.mkdtemp(prefix="qh")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16), PATH=BIN + os.pathsep + os.environ["PATH"])
    env.pop("RAY_ADDRESS", None)
    dashboard_port, gcs_port = _free_port(), _free_port()
    start = [os.path.join(BIN, "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
             f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
             "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
             # Ray's fixed defaults (52365 for the dashboard agent, 10001 for the client
             # server, ...) collide with any other Ray on the machine, and a head whose agent
             # cannot bind answers "No available agent" to every submission: free ports only.
             *(f"--{flag}={_free_port()}" for flag in (
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "ray-client-server-port",
                 "metrics-export-port", "runtime-env-agent-port"))]
    proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    base = tmp_path_factory.mktemp("submit")
    corpus = load_embedded_table("en", 60)
    write_jsonl(base / "docs.jsonl", corpus)
    (base / "spec.yaml").write_text(SMALL_SPEC)
    gcs_address = f"127.0.0.1:{gcs_port}"
    yield {"env": env, "address": f"http://127.0.0.1:{dashboard_port}", "temp_dir": temp_dir,
           "gcs_address": gcs_address, "base": base, "root": str(base / "data")}
    stop(processes_of(temp_dir) + processes_of(gcs_address))
    shutil.rmtree(temp_dir, ignore_errors=True)


def quarry(head, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO,
                          env=env or head["env"], capture_output=True, text=True, timeout=timeout)


def submit(head, *command, options=()):
    return quarry(head, "--root", head["root"], "submit", "--address", head["address"], *options,
                  "--", *command)


def test_the_head_listens_on_loopback_only(head):
    pids = {p.pid for p in processes_of(head["temp_dir"]) + processes_of(head["gcs_address"])}
    found = listeners(pids)
    assert {"gcs_server", "raylet"} <= {name for _, _, name in found}, found
    assert [x for x in found if not is_loopback(x[0])] == []


def test_build_and_mine_jobs_fill_the_catalog(head):
    base = head["base"]
    build = submit(head, "build", "wiki", "--name", "small", "--source", "files", "--path",
                   str(base / "docs.jsonl"), "--columns", SMALL_COLUMNS)
    assert build.returncode == 0, build.stderr[-3000:]
    assert "corpus/small: committed v0001: 60 rows" in build.stdout  # the job's own output, followed
    assert "succeeded" in build.stderr
    tasks = submit(head, "build", "tasks", "--spec", str(base / "spec.yaml"))
    assert tasks.returncode == 0, tasks.stderr[-3000:]
    mine = submit(head, "mine", "--examples", "small", "--tasks", "desc", "--depth", "20")
    assert mine.returncode == 0, mine.stdout[-3000:] + mine.stderr[-3000:]
    catalog = Catalog(head["root"])
    negatives = catalog.read_table("negatives", "small")
    assert negatives.num_rows > 0
    assert catalog.manifest("negatives", "small").version == "v0001"


def test_a_failing_job_exits_non_zero_with_its_error(head):
    proc = submit(head, "build", "tasks", "--spec", "no-such-spec.yaml")
    assert proc.returncode == 2  # the job's own exit status for bad input
    assert "error: no-such-spec.yaml: no such task spec" in proc.stdout  # from the job's log
    assert "failed: Job entrypoint command failed with exit code 2" in proc.stderr


def test_no_wait_jobs_logs_and_stop(head):
    proc = submit(head, "datasets", options=("--no-wait",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    job_id = proc.stdout.strip()
    assert job_id.startswith("raysubmit_")
    logs = quarry(head, "jobs", "logs", job_id, "--follow", "--address", head["address"])
    assert logs.returncode == 0 and "corpus" in logs.stdout
    listing = quarry(head, "jobs", "--address", head["address"])
    assert job_id in listing.stdout and "datasets" in listing.stdout
    stop = quarry(head, "jobs", "stop", job_id, "--address", head["address"])
    assert stop.returncode == 0 and "not running" in stop.stderr
    missing = quarry(head, "jobs", "logs", "raysubmit_nosuch", "--address", head["address"])
    assert missing.returncode == 2 and "no job 'raysubmit_nosuch'" in missing.stderr


def test_plain_ray_job_submit_runs_quarry(head):
    proc = subprocess.run([os.path.join(BIN, "ray"), "job", "submit", "--address", head["address"],
                           "--working-dir", REPO, "--", "quarry", "--root", head["root"], "datasets"],
                          env=head["env"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "corpus" in proc.stdout and "small" in proc.stdout


def test_a_wrong_token_is_refused(head):
    env = dict(head["env"], RAY_AUTH_TOKEN=secrets.token_hex(16))
    proc = quarry(head, "jobs", "--address", head["address"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: the Ray job server at http://127.0.0.1:")
    assert "refused this client: Authentication failed: Forbidden: Invalid authentication token" in proc.stderr
    no_auth = quarry(head, "jobs", "--address", head["address"], env=dict(head["env"], RAY_AUTH_MODE="disabled"))
    assert no_auth.returncode == 2 and "Missing authentication token" in no_auth.stderr
