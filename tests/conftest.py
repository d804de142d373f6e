"""Shared fixtures. Ray starts at most once per test module that asks for it."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("QUARRY_PROGRESS", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("RAY_ADDRESS", None)  # tests never join an outside cluster
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo would pick the hostname's interface: keep to loopback


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray on loopback for one test module."""
    import ray

    from pipelines.ray_runtime import configure_data_context

    temp_dir = tempfile.mkdtemp(prefix="qr")  # short: Ray's socket paths have a length limit
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    configure_data_context()
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def catalog(tmp_path):
    from storage import Catalog

    return Catalog(str(tmp_path / "root"))
