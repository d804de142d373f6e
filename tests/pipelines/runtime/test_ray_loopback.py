"""Every process of the private local Ray listens on loopback only, and its idle workers
exit, and return freed memory, instead of holding it between stages.

Measured before the fix on a machine with a non-loopback address: the GCS, raylet, workers
and agents listened on 0.0.0.0, :: or that address (12 sockets). Both ways Quarry starts
Ray are covered: in a process that imported Ray first (pytest, notebooks), and in a fresh
interpreter through ``ensure_ray``, as the CLI does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import ray  # imported before the fixture starts Ray: the path that must patch Ray's constant

from pipelines.runtime.local_ray import IDLE_WORKER_EXIT_MS
from tests.pipelines.ray_procs import alive, is_loopback, listeners, processes_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def ray_listeners(temp_dir: str) -> list[tuple[str, int, str]]:
    """Listening sockets of the driver's descendants and of the processes started with the
    Ray temp dir on their command line."""
    pids = {p.pid for p in psutil.Process().children(recursive=True)} | {p.pid for p in processes_of(temp_dir)}
    return listeners(pids)


@ray.remote(num_cpus=0)
class _Probe:
    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
def _task_pid() -> int:
    return os.getpid()


def test_every_listener_of_the_local_ray_is_on_loopback(ray_local):
    # A task and an actor, so that worker processes with their own gRPC servers exist.
    probe = _Probe.remote()
    ray.get([probe.pid.remote(), _task_pid.remote()])
    listeners = ray_listeners(ray_local)
    names = {name for _, _, name in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners  # the check saw Ray's servers
    assert len(listeners) >= 6, listeners
    assert [x for x in listeners if not is_loopback(x[0])] == []
    assert ray.util.get_node_ip_address() == "127.0.0.1"


@ray.remote(num_cpus=1)
def _busy_pid() -> int:
    time.sleep(0.5)  # long enough that the tasks spread over a worker per CPU
    return os.getpid()


def test_idle_workers_of_the_local_ray_exit(ray_local):
    # Ray's default keeps an idle worker per CPU for good; during a mine's encode or search
    # in the driver they held 0.34-0.48 GiB (docs/benchmarks.md, memory).
    pids = set(ray.get([_busy_pid.remote() for _ in range(4)]))

    def running() -> set[int]:
        still = set()
        for pid in pids:
            try:
                if alive(psutil.Process(pid)):
                    still.add(pid)
            except psutil.Error:  # gone
                continue
        return still

    assert running(), "the workers exited at once: the check would prove nothing"
    deadline = time.monotonic() + IDLE_WORKER_EXIT_MS / 1000 + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running() == set(), f"workers {sorted(running())} still idle {IDLE_WORKER_EXIT_MS / 1000 + 20:.0f} s later"


@ray.remote(num_cpus=0)
class _ArrowWorker:
    def rss_after_freeing(self, mib: int) -> tuple[int, int, int]:
        """RSS before, holding and after freeing ``mib`` Arrow buffers of 1 MiB each, with no
        allocation after the free (as a worker that has returned its block and gone idle).
        Buffers of this size, as compute kernels return them, are what mimalloc kept; one
        buffer of hundreds of MiB it returns at once either way."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rss = lambda: psutil.Process().memory_info().rss  # noqa: E731
        ones = pa.array([1] * (1 << 17), pa.int64())  # 1 MiB
        before = rss()
        buffers = [pc.add(ones, i) for i in range(mib)]
        held = rss()
        del buffers
        return before, held, rss()


def test_workers_of_the_local_ray_hand_freed_arrow_memory_back():
    # Arrow's mimalloc kept a freed buffer's pages until its next allocation: idle workers
    # held 0.50 GiB at a cold mine's peak (docs/benchmarks.md). MIMALLOC_PURGE_DELAY=0,
    # set for the private Ray's processes, hands them back at once.
    worker = _ArrowWorker.remote()
    before, held, after = ray.get(worker.rss_after_freeing.remote(256))
    assert held - before > 200 << 20, "the buffers never took memory: the check would prove nothing"
    assert after - before < 64 << 20, f"the worker kept {(after - before) >> 20} MiB of 256 MiB freed"


def test_a_fresh_cli_process_starts_ray_on_loopback_only():
    # The CLI's path: a new interpreter, ensure_ray() before anything imported Ray.
    script = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {REPO!r})
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from pipelines.runtime.local_ray import ensure_ray
        ensure_ray(1)
        import ray
        from test_ray_loopback import ray_listeners
        ray.get(ray.remote(num_cpus=0)(lambda: 1).remote())
        print(os.environ.get("RAY_AUTH_MODE"))
        print(json.dumps(ray_listeners(os.environ["QUARRY_RAY_TMP"])))
        ray.shutdown()
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["QUARRY_RAY_TMP"] = temp_dir = tempfile.mkdtemp(prefix="qr")  # short: socket paths
    try:
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=180)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listeners = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"gcs_server", "raylet"} <= {name for _, _, name in listeners}, listeners
    assert [x for x in listeners if not is_loopback(x[0])] == []
    # Token auth stays on (Ray's default for a new local cluster); only its notice is gone.
    assert "Token authentication is enabled" not in proc.stderr
    assert "token" in proc.stdout.strip().splitlines()[-2]


def _train_listeners(torch_config, out_dir) -> dict[int, list]:
    """Listening sockets of each training worker's process once its process group is up."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config):
        import psutil  # inside: the workers cannot import this test's helper modules
        import ray.train
        import torch.distributed as dist

        dist.barrier()  # every rank has joined: the store and gloo's pairs are listening
        mine = [(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("inet")
                if c.status == psutil.CONN_LISTEN]
        with open(os.path.join(config["out"], f"{ray.train.get_context().get_world_rank()}.json"), "w") as f:
            json.dump(mine, f)
        dist.barrier()

    out_dir.mkdir()
    TorchTrainer(loop, train_loop_config={"out": str(out_dir)}, scaling_config=ScalingConfig(num_workers=2),
                 torch_config=torch_config).fit()
    return {int(p.stem): json.loads(p.read_text()) for p in out_dir.glob("*.json")}


def test_training_workers_rendezvous_on_loopback_only(tmp_path):
    from ray.train.torch import TorchConfig

    from pipelines.train.rendezvous import BoundStoreTorchConfig

    # Ray's own setup: torch's TCPStore in rank 0 binds every interface (the test can fail).
    ray_own = _train_listeners(TorchConfig(), tmp_path / "ray")
    assert [x for x in ray_own[0] if not is_loopback(x[0])] != [], ray_own
    ours = _train_listeners(BoundStoreTorchConfig(), tmp_path / "bound")
    assert sorted(ours) == [0, 1] and ours[0], ours  # rank 0 hosts the store, so it listens
    assert [x for rank in ours.values() for x in rank if not is_loopback(x[0])] == [], ours
