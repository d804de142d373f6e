"""A driver that dies while it writes a version: nothing partial becomes visible, the next
run commits, and ``quarry datasets --gc`` removes what the dead writer left.

The driver dies with ``os._exit`` (no cleanup runs, as after SIGKILL) at the two points
that matter, chosen exactly rather than by timing: with its files staged but no version
claimed, and with a version claimed and its files moved in but no manifest written."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from pipelines.cli import main
from storage import Catalog
from tests.pipelines.ray_procs import processes_of, stop

pytestmark = pytest.mark.integration  # starts Ray or child processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIE_AT = {
    # after staging, before the version number is claimed
    "staged": "w.DatasetWriter._claim_version = lambda self: os._exit(9)",
    # after the claim and the move of the parts, before the manifest (the commit point)
    "claimed": textwrap.dedent("""
        real = r.DataRoot.write_bytes_atomic
        def write(self, path, data):
            if path.endswith("/_manifest.json"):
                os._exit(9)
            return real(self, path, data)
        r.DataRoot.write_bytes_atomic = write
    """),
}


def _quarry(root: str, *args: str, die_at: str | None = None) -> subprocess.CompletedProcess:
    script = "\n".join(["import os, sys", f"sys.path.insert(0, {REPO!r})",
                        "from storage import writer as w, root as r", DIE_AT.get(die_at, ""),
                        "from pipelines.cli import main", f"sys.exit(main({['--root', root, *args]!r}))"])
    ray_tmp = tempfile.mkdtemp(prefix="qw")
    try:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, QUARRY_RAY_TMP=ray_tmp, QUARRY_RAY_CPUS="2"))
    finally:
        stop(processes_of(ray_tmp))  # a driver that died leaves its local Ray behind
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("die_at", sorted(DIE_AT))
def test_a_driver_killed_mid_write_leaves_no_version_and_gc_cleans_up(die_at, tmp_path, capsys):
    root = str(tmp_path / "root")
    killed = _quarry(root, "build", "wiki", "--limit", "50", die_at=die_at)
    assert killed.returncode == 9, killed.stderr[-2000:]
    catalog = Catalog(root)
    assert catalog.versions("corpus", "vital") == []  # nothing a reader can see
    dataset = os.path.join(root, "corpus", "vital")
    leftovers = sorted(os.listdir(dataset))
    assert leftovers == (["_staging"] if die_at == "staged" else ["_staging", "v0001"])

    again = _quarry(root, "build", "wiki", "--limit", "50")
    assert again.returncode == 0, again.stderr[-2000:]
    committed = "v0001" if die_at == "staged" else "v0002"  # a claimed number is never reused
    assert catalog.versions("corpus", "vital") == [committed]
    assert catalog.verify("corpus", "vital").num_rows == 50

    assert main(["--root", root, "datasets", "--gc"]) == 0  # starts no Ray: in this process
    assert sorted(os.listdir(dataset)) == [committed]  # the dead writer's debris is gone
    assert f"removed {len(leftovers)} stale staging or uncommitted directories" in capsys.readouterr().out
