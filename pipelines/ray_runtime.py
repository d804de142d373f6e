"""Start or join Ray, the same way for every stage.

``RAY_ADDRESS`` set: join that cluster. Otherwise start a private local Ray with the
dashboard off and every listener on loopback (see docs/operations.md). Stages never call
``ray.init`` themselves.
"""

from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger("quarry")


def ensure_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    # Measured here: without this, Ray may bind the machine's network address.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray starts workers at nice 15 so that its control plane stays responsive on busy
    # shared nodes. On a private local Ray the workers are the job: at nice 15 the teacher's
    # intra-op threads lose the CPU to every wake-up of the driver and daemons. Measured on
    # 2 cores: 1,500 passages embedded in 55.7 s at nice 15, 48.3 s at nice 0.
    os.environ.setdefault("RAY_worker_niceness", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        # Training workers of a private local Ray talk over loopback; gloo would otherwise
        # pick the interface of the machine's hostname.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        temp_dir = os.environ.get("QUARRY_RAY_TMP") or os.path.join(
            tempfile.gettempdir(), f"quarry-ray-{os.getuid()}")
        cpus = num_cpus or int(os.environ.get("QUARRY_RAY_CPUS", "0")) or (os.cpu_count() or 2)
        log.info("starting a local Ray (%d CPUs, temp %s)", cpus, temp_dir)
        # address="local" always starts a fresh instance: reusing a temp dir after `ray stop`
        # otherwise finds a stale cluster file and hangs.
        # The workers' own output (QUARRY_RAY_LOG_TO_DRIVER=0 unless `quarry -v`) stays in
        # the session's log files under the temp dir.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 _temp_dir=temp_dir, _node_ip_address="127.0.0.1",
                 log_to_driver=os.environ.get("QUARRY_RAY_LOG_TO_DRIVER", "1") != "0", configure_logging=False)
    configure_data_context()


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
