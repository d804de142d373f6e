"""Two raylets on this machine (``ray.cluster_utils.Cluster``, both on 127.0.0.1, 2 CPUs
each) sharing one data root: mining's encoder actors and Ray Train's workers land on both
nodes, and the results equal the single-node ones.

Slow-marked (about 2¾ minutes on 2 cores) to keep `make test` within its budget; run it with
``pytest -m slow tests/pipelines/test_two_nodes.py``."""

import os
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

from pipelines.builders.sources import load_embedded_table
from pipelines.cli import main
from storage import Catalog
from tests.pipelines.small_source import SMALL_COLUMNS, SMALL_SPEC, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train", "tiny-decoder.yaml")


@pytest.fixture(scope="module")
def cluster():
    from pipelines.runtime.local_ray import configure_data_context, keep_ray_on_loopback

    keep_ray_on_loopback()
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="q2")  # short: Ray's socket paths have a length limit
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir  # Cluster writes its address file under $RAY_TMPDIR/ray
    os.makedirs(os.path.join(temp_dir, "ray"))
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": "127.0.0.1", "temp_dir": temp_dir, "include_dashboard": False})
    nodes.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
    configure_data_context()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    if saved is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = saved
    shutil.rmtree(temp_dir, ignore_errors=True)


class Placement:
    """Which raylets (nodes) the processes whose command line names ``marker`` run under,
    sampled while a stage runs: a Ray worker is a child of its node's raylet."""

    def __init__(self, marker: str):
        self.marker, self.raylets, self._stop = marker, set(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            for p in psutil.Process().children(recursive=True):
                try:
                    if self.marker in " ".join(p.cmdline()):
                        self.raylets.add(p.ppid())
                except psutil.Error:
                    continue
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def root(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("two")
    write_jsonl(base / "docs.jsonl", load_embedded_table("en", 80))
    (base / "spec.yaml").write_text(SMALL_SPEC)
    root = str(base / "data")
    assert main(["--root", root, "build", "wiki", "--name", "small", "--source", "files", "--path",
                 str(base / "docs.jsonl"), "--columns", SMALL_COLUMNS]) == 0
    assert main(["--root", root, "build", "tasks", "--spec", str(base / "spec.yaml")]) == 0
    return root


def test_encoder_actors_on_both_nodes_give_the_single_process_result(root):
    import ray

    from miners.cache import EmbeddingCache
    from miners.teacher import Teacher, TeacherSpec, cache_key, resolve_teacher
    from pipelines.mine import MineConfig
    from pipelines.mine.search import search
    from pipelines.mine.select import SelectNegatives, select_on_ray
    from pipelines.runtime.local_ray import on_private_local_ray

    assert not on_private_local_ray()  # a joined cluster: --encode-in auto keeps the actor pool
    with Placement("EncoderActor") as placed:
        assert main(["--root", root, "mine", "--examples", "small", "--tasks", "desc", "--depth", "20",
                     "--encoders", "2"]) == 0
    assert len(placed.raylets) == 2, placed.raylets
    catalog = Catalog(root)
    texts = catalog.read_table("corpus", "small").column("text").to_pylist()
    spec = TeacherSpec()
    resolved = resolve_teacher(spec)
    cached = EmbeddingCache(catalog, resolved.cache_name, dim=None, config={}).load([cache_key(t) for t in texts])
    # bf16 sums depend on the padded shape of the batch, so equal only to its rounding
    assert np.allclose(cached, Teacher(spec, device="cpu").encode(texts, batch_size=64),
                       atol={"fp32": 1e-5, "bf16": 5e-3}[resolved.precision])
    searched = search(MineConfig(examples="small", depth=20, tasks=("desc",), reuse=False), catalog)
    on_ray = pa.concat_tables(ray.get(select_on_ray(searched, 16, "run-2n")))
    in_process = SelectNegatives({n: p.table for n, p in searched.pools.items()}, searched.plans,
                                 searched.teacher.label, "run-2n")(searched.queries)
    # Each chunk lists its negatives, then rejections, then query rows: compare kind by kind.
    from pipelines.mine.write import split_selected

    assert on_ray.num_rows == in_process.num_rows > 0
    for kind in ("negative", "rejected", "query"):
        assert split_selected(on_ray, kind).equals(split_selected(in_process, kind)), kind


def test_training_spread_over_both_nodes_equals_training_on_one(root, tmp_path):
    assert main(["--root", root, "export", "--examples", "small", "--tasks", "desc", "--global-batch", "8",
                 "--workers", "2", "--name", "two"]) == 0
    raylets = {}
    for placement in ("PACK", "SPREAD"):
        config = tmp_path / f"{placement}.yaml"
        config.write_text(open(CONFIG).read() + f"placement: {placement}\ncheckpoint_every: 3\n")
        with Placement("RayTrainWorker") as placed:
            assert main(["--root", root, "train", "--config", str(config), "--shards", "two",
                         "--run-name", placement.lower(), "--max-steps", "6"]) == 0
        raylets[placement] = placed.raylets
    assert len(raylets["PACK"]) == 1 and len(raylets["SPREAD"]) == 2, raylets
    from test_train_ray import _losses, _weights

    packed, spread = _losses(root, "pack"), _losses(root, "spread")
    assert [r["step"] for r in spread] == list(range(1, 7))
    assert np.allclose([r["loss"] for r in spread], [r["loss"] for r in packed], atol=1e-4)
    a, b = _weights(root, "spread"), _weights(root, "pack")
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-4) for k in a)
