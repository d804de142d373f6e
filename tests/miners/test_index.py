import numpy as np
import pytest

from miners.index import IndexConfig, Searcher, brute_force_topk
from storage import InputError


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _unit(rng, 2000, 32), _unit(rng, 300, 32)


def test_flat_equals_brute_force(data):
    pool, queries = data
    scores, ids = Searcher(pool).search(queries, 20, batch_size=64)  # several search batches
    ref_scores, ref_ids = brute_force_topk(queries, pool, 20)
    assert np.array_equal(ids, ref_ids)
    assert np.allclose(scores, ref_scores, atol=1e-5)


def test_ivf_visiting_every_list_is_exact(data):
    pool, queries = data
    scores, ids = Searcher(pool, IndexConfig(kind="ivf", nlist=16, nprobe=16)).search(queries, 10)
    assert np.array_equal(ids, brute_force_topk(queries, pool, 10)[1])


def test_ivf_trains_on_the_sample_it_is_given_and_stays_exact_when_every_list_is_visited(data):
    """FAISS draws ``train_per_list`` points per list for k-means (2,000 vectors, 16 lists, 39
    per list: 624 of them); visiting every list still gives the exact top-k."""
    pool, queries = data
    searcher = Searcher(pool, IndexConfig(kind="ivf", nlist=16, nprobe=16, train_per_list=39))
    assert searcher.index.cp.max_points_per_centroid == 39
    assert np.array_equal(searcher.search(queries, 10)[1], brute_force_topk(queries, pool, 10)[1])
    with pytest.raises(InputError, match="train_per_list must be at least 39"):
        IndexConfig(kind="ivf", train_per_list=38)


def test_hnsw_recall_is_high(data):
    pool, queries = data
    _, ids = Searcher(pool, IndexConfig(kind="hnsw", ef_search=256)).search(queries, 10)
    ref = brute_force_topk(queries, pool, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
    assert recall >= 0.95


def test_depth_is_capped_at_the_pool_size_and_bad_input_is_clear(data):
    pool, queries = data
    scores, ids = Searcher(pool[:5]).search(queries[:3], 50)
    assert ids.shape == (3, 5) and (ids >= 0).all()
    with pytest.raises(InputError, match="empty candidate pool"):
        Searcher(np.zeros((0, 32), np.float32))
    with pytest.raises(InputError, match="index has dim 32"):
        Searcher(pool).search(np.zeros((2, 16), np.float32), 5)
    with pytest.raises(InputError, match="kind must be one of flat, ivf, hnsw"):
        IndexConfig(kind="annoy")


def _faiss_gpus() -> int:
    try:
        import faiss
    except ImportError:  # a GPU machine without FAISS (`pytest -m gpu` there): nothing to compare
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@pytest.mark.gpu
@pytest.mark.skipif(not _faiss_gpus(), reason="needs faiss-gpu and a CUDA GPU")
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_search_equals_cpu_search(data, kind):
    pool, queries = data
    cfg = dict(kind=kind, nlist=16 if kind == "ivf" else None, nprobe=16)
    cpu_scores, cpu_ids = Searcher(pool, IndexConfig(**cfg, use_gpu=False)).search(queries, 20)
    on_gpu = Searcher(pool, IndexConfig(**cfg, use_gpu=True))
    assert on_gpu.device != "cpu"
    gpu_scores, gpu_ids = on_gpu.search(queries, 20)
    assert np.array_equal(gpu_ids, cpu_ids)
    assert np.allclose(gpu_scores, cpu_scores, atol=1e-4)
