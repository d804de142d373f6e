import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import miners.teacher as teacher_module
from miners.cache import EmbeddingCache, embeddings_table
from miners.teacher import PRECISIONS, Teacher, TeacherSpec, fingerprint, plan_batches, resolve_teacher
from storage import PACKAGED_MINILM, CatalogError, InputError, resolve_packaged

MINILM_LAYER = "encoder.layer.3.attention.self.query.weight"


def _append(cache, keys, vectors):
    def stage(writer):
        writer.write_table(embeddings_table(keys, vectors))
        return len(keys)

    return cache.append(stage, {})


def test_cache_appends_versions_and_loads_in_request_order(catalog):
    cache = EmbeddingCache(catalog, "t-1", dim=None, config={"teacher": "x"})
    assert cache.known_keys() == set()
    cache.check_dim(4)
    v = np.arange(8, dtype=np.float32).reshape(2, 4)
    m1, _ = _append(cache, ["a", "b"], v)
    m2, _ = _append(cache, ["c"], np.full((1, 4), 9, np.float32))
    assert m2.version == "v0002" and m2.num_rows == 3
    assert cache.known_keys() == {"a", "b", "c"}
    loaded = cache.load(["c", "a"])
    assert np.array_equal(loaded, np.stack([np.full(4, 9, np.float32), v[0]]))
    assert catalog.read_table("embeddings", "t-1").num_rows == 3  # queryable like any dataset
    with pytest.raises(CatalogError, match="lacks 1"):
        cache.load(["a", "zz"])


def test_load_present_reads_what_the_cache_holds_and_leaves_the_rest(catalog):
    # The mine reads the cached vectors while the teacher encodes the rest (pipelines.mine.search).
    cache = EmbeddingCache(catalog, "t-1", dim=None, config={})
    present, vectors = cache.load_present(["a", "b"])
    assert present.tolist() == [False, False] and len(vectors) == 0  # an empty cache holds none
    with pytest.raises(CatalogError, match="is empty"):
        cache.load(["a"])
    cache.check_dim(4)
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    _append(cache, ["a", "b", "c"], v)
    present, vectors = cache.load_present(["c", "zz", "a", "c"])
    assert present.tolist() == [True, False, True, True]
    assert np.array_equal(vectors, v[[2, 0, 2]])


def test_cache_refuses_vectors_of_another_size(catalog):
    cache = EmbeddingCache(catalog, "t-1", dim=None, config={})
    cache.check_dim(4)
    _append(cache, ["a"], np.zeros((1, 4), np.float32))
    other = EmbeddingCache(catalog, "t-1", dim=8, config={})
    with pytest.raises(CatalogError, match="holds 8-dimensional vectors but the teacher gives 4"):
        other.latest()


def test_fingerprint_changes_with_the_model_files(tmp_path):
    src = resolve_packaged(PACKAGED_MINILM)
    copy = tmp_path / "m"
    shutil.copytree(src, copy)
    assert fingerprint(str(copy)) == fingerprint(src)
    for name in ("eval.json", "_published.json"):  # Quarry's own notes beside a model: not the model
        (copy / name).write_text('{"id": "a fresh one"}')
    assert fingerprint(str(copy)) == fingerprint(src)
    with open(copy / "config.json", "a") as f:
        f.write(" ")
    assert fingerprint(str(copy)) != fingerprint(src)
    assert fingerprint(src, commit="abc") != fingerprint(src, commit="def")  # a hub snapshot's commit counts


def test_packaged_teacher_encodes_normalised_rows():
    spec = TeacherSpec()
    resolved = resolve_teacher(spec)
    fp, max_len = resolved.fingerprint, resolved.max_length
    assert max_len == 256
    teacher = Teacher(spec, device="cpu")
    out = teacher.encode(["a cat sat", "quantum chromodynamics"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert teacher.cache_name == resolved.spec.cache_name(fp, 256)
    assert TeacherSpec(max_length=128, precision=resolved.precision).cache_name(fp, 128) != teacher.cache_name


def test_precision_is_part_of_the_cache_key_and_fp32_keeps_the_old_key():
    fp = "0123456789abcdef"
    names = {p: TeacherSpec(precision=p).cache_name(fp, 256) for p in PRECISIONS}
    assert len(set(names.values())) == len(PRECISIONS)  # vectors of two precisions never share a cache
    legacy = hashlib.sha256(json.dumps([fp, 256, True]).encode()).hexdigest()[:12]
    assert names["fp32"] == f"packaged-all-MiniLM-L6-v2-{legacy}"  # caches built before precision stay valid
    with pytest.raises(ValueError, match="resolve"):
        TeacherSpec().cache_name(fp, 256)  # auto is never a key
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, got 'int8'"):
        TeacherSpec(precision="int8")


def test_the_cpuinfo_bf16_check_agrees_with_torch():
    import torch

    assert teacher_module.native_bf16_cpu() == bool(torch.cpu._is_avx512_bf16_supported()
                                                    or torch.cpu._is_amx_tile_supported())


def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch):
    monkeypatch.setattr(teacher_module, "native_bf16_cpu", lambda: True)
    assert resolve_teacher(TeacherSpec(), "cpu").precision == "bf16"
    assert resolve_teacher(TeacherSpec(), "cuda").precision == "fp32"  # GPUs: not measured yet
    assert resolve_teacher(TeacherSpec(precision="fp32"), "cpu").precision == "fp32"  # asked for: kept
    on_cpu = resolve_teacher(TeacherSpec())  # the driver, before it knows the encoders' device
    on_gpu = on_cpu.on_device("auto", "cuda")
    assert on_gpu.precision == "fp32" and on_gpu.cache_name != on_cpu.cache_name
    assert on_cpu.on_device("bf16", "cuda").cache_name == on_cpu.cache_name
    monkeypatch.setattr(teacher_module, "native_bf16_cpu", lambda: False)
    assert resolve_teacher(TeacherSpec(), "cpu").precision == "fp32"
    assert resolve_teacher(TeacherSpec(precision="bf16"), "cuda").precision == "bf16"


def test_bf16_vectors_are_the_fp32_vectors_to_within_rounding():
    texts = ["a cat sat on the mat", "quantum chromodynamics is the theory of the strong interaction " * 4, ""]
    fp32 = Teacher(TeacherSpec(precision="fp32"), device="cpu").encode(texts)
    bf16 = Teacher(TeacherSpec(precision="bf16"), device="cpu").encode(texts)
    assert bf16.dtype == np.float32
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)  # normalised in fp32
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(fp32, bf16)  # close, and really computed in bf16


def test_a_teacher_that_does_not_load_is_a_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="teacher .*broken.* does not load"):
        Teacher(TeacherSpec(teacher=str(tmp_path / "broken")), device="cpu")


def test_plan_batches_keeps_each_pass_within_the_token_budget():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(1, 300, size=500)] + [900]  # one row alone over the budget
    batches = plan_batches(lengths, max_rows=64, max_tokens=1024)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every row once
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) <= 64 and (padded <= 1024 or len(b) == 1)
    assert [len(b) for b in batches if lengths[b[0]] == 900] == [1]
    # Longest first, and greedy: a batch stops only where one more row would break a limit.
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)
    for b, nxt in zip(batches, batches[1:]):
        assert len(b) == 64 or (len(b) + 1) * lengths[b[0]] > 1024
    # Short texts fill the row cap; passages go a few at a time.
    assert plan_batches([10] * 200, 64, 2048) == [list(range(64)), list(range(64, 128)),
                                                   list(range(128, 192)), list(range(192, 200))]
    assert [len(b) for b in plan_batches([256] * 20, 64, 2048)] == [8, 8, 4]
    with pytest.raises(ValueError, match="positive"):
        plan_batches([3], 0, 100)


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-5), ("bf16", 5e-3)])
def test_token_budget_encoding_equals_plain_encoding(precision, atol):
    """The optimisation against its reference: same rows, same order, same vectors (to the
    rounding of the precision: bf16 sums depend on the batch's padded shape)."""
    teacher = Teacher(TeacherSpec(max_length=64, precision=precision), device="cpu")
    texts = ["a cat", "the history of the Roman empire from its founding to its fall " * 6, "",
             "quantum chromodynamics", "x " * 200, "a cat"]
    lengths = teacher.token_lengths(texts)
    assert lengths[1] == lengths[4] == 64 and lengths[2] == 2  # truncated at max_length; [CLS] [SEP]
    plain = teacher.encode(texts, batch_size=32)
    budgeted = teacher.encode(texts, batch_size=32, max_batch_tokens=70)  # a 64-token row goes alone
    assert budgeted.shape == plain.shape == (6, 384)
    assert np.allclose(budgeted, plain, atol=atol)
    assert np.array_equal(budgeted[0], budgeted[5])
    assert teacher.encode([], max_batch_tokens=70).shape == (0, 384)


def test_same_shape_different_weights_change_the_fingerprint(tmp_path, perturb_in_place):
    src = resolve_packaged(PACKAGED_MINILM)
    copy = tmp_path / "m"
    shutil.copytree(src, copy)
    perturb_in_place(copy / "model.safetensors", {MINILM_LAYER})
    assert os.path.getsize(copy / "model.safetensors") == os.path.getsize(os.path.join(src, "model.safetensors"))
    assert fingerprint(str(copy)) != fingerprint(src)
    assert resolve_teacher(TeacherSpec(str(copy))).cache_name != resolve_teacher(TeacherSpec()).cache_name
    shutil.copy(os.path.join(src, "model.safetensors"), copy / "model.safetensors")
    (copy / "README.md").write_text("edited docs")  # documentation never changes a vector
    assert fingerprint(str(copy)) == fingerprint(src)


def test_large_files_are_identified_by_header_and_sampled_blocks(tmp_path, monkeypatch, perturb_in_place):
    import miners.teacher as teacher_module

    monkeypatch.setattr(teacher_module, "FULL_HASH_BYTES", 1 << 20)  # MiniLM's 87 MiB file is now "large"
    src = resolve_packaged(PACKAGED_MINILM)
    copy = tmp_path / "m"
    shutil.copytree(src, copy)
    assert fingerprint(str(copy)) == fingerprint(src)
    perturb_in_place(copy / "model.safetensors")  # every float tensor changes, as in a retrained model
    assert fingerprint(str(copy)) != fingerprint(src)


def _hub_snapshot(cache, repo, commit, source, refs=("main",)):
    """A model in the hub cache's own layout: snapshots/<commit>/ and refs/<branch>."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    shutil.copytree(source, snapshot)
    for ref in refs:
        (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir(exist_ok=True)
        (cache / f"models--{repo.replace('/', '--')}" / "refs" / ref).write_text(commit)
    return snapshot


def test_a_hub_id_is_resolved_to_its_commit(tmp_path, monkeypatch, perturb_in_place):
    import huggingface_hub.constants

    from miners.teacher import resolve_model_dir

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    src = resolve_packaged(PACKAGED_MINILM)
    first, second = "a" * 40, "b" * 40
    old = _hub_snapshot(cache, "org/minilm", first, src)
    assert resolve_model_dir("org/minilm") == (str(old), first)
    before = resolve_teacher(TeacherSpec("org/minilm"))
    assert before.commit == first and before.path == str(old)

    # The branch moves to a retrained model: the same id now names other vectors.
    new = _hub_snapshot(cache, "org/minilm", second, src)
    perturb_in_place(new / "model.safetensors", {MINILM_LAYER})
    after = resolve_teacher(TeacherSpec("org/minilm"))
    assert after.commit == second and after.fingerprint != before.fingerprint
    assert after.cache_name != before.cache_name
    assert resolve_teacher(TeacherSpec("org/minilm", revision=first)).fingerprint == before.fingerprint
    out = Teacher(after, device="cpu").encode(["a cat sat"])  # the actors load exactly that snapshot
    assert out.shape == (1, 384)
    with pytest.raises(InputError, match="neither a local folder nor a model the hub provides"):
        resolve_teacher(TeacherSpec("org/absent"))
    with pytest.raises(InputError, match="teacher '/no/such/folder': no such folder"):
        resolve_teacher(TeacherSpec("/no/such/folder"))
