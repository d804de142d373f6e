"""Start or join Ray, the same way for every stage.

``RAY_ADDRESS`` set: join that cluster. Otherwise start a private local Ray with the
dashboard off, token authentication on, and Ray's own servers (GCS, raylet, agents, every
worker's) on loopback (``start_local_ray``; measured by
tests/pipelines/runtime/test_ray_loopback.py). A training run's rendezvous store listens on
the same address (``pipelines.train.rendezvous``). Its idle workers exit after
``IDLE_WORKER_EXIT_MS``. Stages never call ``ray.init`` themselves.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import tempfile
import time

log = logging.getLogger("quarry")

LOOPBACK_IP = "127.0.0.1"
# A private local Ray ends workers that sat idle this long (Ray's default keeps one idle
# worker per CPU for good, each holding its imports). Between stages the driver often works
# alone for minutes (encoding, searching), and the idle workers of the stage before held
# their memory through it. At 10 s, workers also exited in the shorter gaps of a test
# module and were started again: tests/pipelines/mine/test_mine_ray.py took 146 s against 129 s
# with Ray's default; at 30 s it took 128 s (docs/benchmarks.md).
IDLE_WORKER_EXIT_MS = 30_000
# The GCS address of the private local Ray this process started, if it started one.
_private_gcs: str | None = None


def ensure_ray(num_cpus: int | None = None) -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        import ray

        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        temp_dir = os.environ.get("QUARRY_RAY_TMP") or os.path.join(
            tempfile.gettempdir(), f"quarry-ray-{os.getuid()}")
        cpus = num_cpus or int(os.environ.get("QUARRY_RAY_CPUS", "0")) or (os.cpu_count() or 2)
        log.info("starting a local Ray (%d CPUs, temp %s)", cpus, temp_dir)
        # The workers' own output (QUARRY_RAY_LOG_TO_DRIVER=0 unless `quarry -v`) stays in
        # the session's log files under the temp dir.
        start_local_ray(cpus, temp_dir,
                        log_to_driver=os.environ.get("QUARRY_RAY_LOG_TO_DRIVER", "1") != "0")
    configure_data_context()


def start_local_ray(num_cpus: int, temp_dir: str, *, log_to_driver: bool) -> None:
    """A private Ray on this machine whose GCS, raylet, agents and workers' servers listen on
    loopback only. Refuses to run (after shutting Ray down) if Ray chose another address."""
    keep_ray_on_loopback()
    # Ray starts workers at nice 15 so that its control plane stays responsive on busy
    # shared nodes. On a private local Ray the workers are the job: at nice 15 the teacher's
    # intra-op threads lose the CPU to every wake-up of the driver and daemons. Measured on
    # 2 cores: 1,500 passages embedded in 55.7 s at nice 15, 48.3 s at nice 0.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Training workers of a private local Ray talk over loopback; gloo would otherwise
    # pick the interface of the machine's hostname.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # Ray Train starts a preemption watcher per run: an actor that polls Ray for nodes being
    # drained (spot instances reclaimed). A private Ray's one node is this machine, so the
    # watcher is only one more process beside the training workers, and one core_worker
    # error line under `quarry -v`. Read by Ray Train from the driver's environment when a
    # run starts. 20-step tiny trainings took 48.7-52.2 s without it, 52.8-53.3 s with it
    # (three pairs, 2 cores; docs/operations.md).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Arrow allocates through mimalloc, which keeps the pages of freed buffers until it next
    # allocates. A worker that has handed its block to the object store then sits idle with
    # them (0.50 GiB over the idle workers of a cold vital mine, at the peak, on 2 cores):
    # purged at once, they go back to the system. Inherited by the workers from this
    # process's environment; a process that loaded pyarrow before keeps its own setting.
    # Measured alone: after freeing 256 Arrow buffers of 1 MiB, a process kept all 298 MiB
    # of RSS they had added by default, 10 MiB with this (docs/benchmarks.md).
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    import ray

    # Ray 2.60 turns token authentication on for a new local cluster (RAY_AUTH_MODE unset)
    # and warns that it did, on every start. Auth stays on; only that one line is dropped.
    # (Exporting RAY_AUTH_MODE=token here instead breaks a process that imported Ray
    # earlier: Ray caches its config at import and refreshes it only when it enables auth.)
    _token_setup_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _drop_token_auth_enabled_notice not in _token_setup_log.filters:
        _token_setup_log.addFilter(_drop_token_auth_enabled_notice)

    # address="local" always starts a fresh instance: reusing a temp dir after `ray stop`
    # otherwise finds a stale cluster file and hangs.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             _temp_dir=temp_dir, _node_ip_address=LOOPBACK_IP,
             log_to_driver=log_to_driver, configure_logging=False,
             _system_config={"num_workers_soft_limit": 0,
                             "idle_worker_killing_time_threshold_ms": IDLE_WORKER_EXIT_MS})
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        ray.shutdown()
        raise RuntimeError(f"the local Ray took the node address {node_ip}, not loopback; "
                           "refusing to run with listeners beyond this machine")
    global _private_gcs
    _private_gcs = ray.get_runtime_context().gcs_address


def on_private_local_ray() -> bool:
    """True when the Ray this process uses is the private local one it started (not a
    cluster joined through RAY_ADDRESS, as a submitted job or ``ray.init(address=...)``)."""
    import ray

    return ray.is_initialized() and _private_gcs is not None and ray.get_runtime_context().gcs_address == _private_gcs


def _drop_token_auth_enabled_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


def keep_ray_on_loopback() -> None:
    # Every Ray server binds the *node IP* (ray-project/ray #55484, #59852), and
    # ray.init(_node_ip_address="127.0.0.1") is no help by itself: Ray's
    # services.resolve_ip_for_localhost swaps a loopback address for the machine's network
    # address unless ray_constants.ENABLE_RAY_CLUSTER is false. That constant is read from
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when Ray is first imported, so the variable
    # must be set before `import ray` (it also reaches the raylet and workers, which import
    # Ray afresh). Where this process imported Ray earlier, the constant is set directly;
    # Ray reads it at call time (services.get_node_ip_address) and nowhere else in 2.60
    # except the `ray start` CLI.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


def configure_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Deterministic row order: the same inputs give byte-identical shards, so an unchanged
    # rebuild is detected by its content hash and resumed runs see the same data.
    ctx.execution_options.preserve_order = True
    # Our stages raise InputError with a one-line message naming file, row or field; keep it
    # as the error the driver sees instead of a generic "UDF failed" wrapper.
    ctx.raise_original_map_exception = True
    ctx.enable_progress_bars = os.environ.get("QUARRY_PROGRESS", "1") != "0"
    if os.environ.get("QUARRY_QUIET_RAY_DATA") == "1":
        # Set after ``import ray.data``, which installs Ray Data's own logging config.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def wait_for_local_exit(title: str, timeout_s: float = 20.0) -> bool:
    """Wait until no process under this one carries ``title`` (a local Ray's workers are
    its descendants; on a cluster there are none to wait for). False if some outlived
    ``timeout_s``.

    Why: Ray Data ends a finished stage's actor pool with ``ray.kill``, which returns before
    the process exits, so a teacher actor (1.2 GiB on the MiniLM teacher) stayed resident
    while the next step loaded the cached vectors and searched them: the peak of a cold
    mine (benchmarks/mine_memory.py, docs/benchmarks.md).
    """
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.cmdline()[:1] and proc.cmdline()[0].startswith(title):
                    alive.append(proc)
            except psutil.Error:  # gone while we looked
                continue
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        psutil.wait_procs(alive, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
