import os
import shutil

import numpy as np
import pytest

from miners.cache import EmbeddingCache, embeddings_table
from miners.teacher import DEFAULT_TEACHER, Teacher, TeacherSpec, describe, fingerprint, resolve_teacher_path
from storage import CatalogError, InputError


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


def test_cache_refuses_vectors_of_another_size(catalog):
    cache = EmbeddingCache(catalog, "t-1", dim=None, config={})
    cache.check_dim(4)
    _append(cache, ["a"], np.zeros((1, 4), np.float32))
    other = EmbeddingCache(catalog, "t-1", dim=8, config={})
    with pytest.raises(CatalogError, match="holds 8-dimensional vectors but the teacher gives 4"):
        other.latest()


def test_fingerprint_changes_with_the_model_files(tmp_path):
    src = resolve_teacher_path(DEFAULT_TEACHER)
    copy = tmp_path / "m"
    shutil.copytree(src, copy)
    assert fingerprint(str(copy)) == fingerprint(src)
    with open(copy / "config.json", "a") as f:
        f.write(" ")
    assert fingerprint(str(copy)) != fingerprint(src)
    assert fingerprint("org/model", "abc") != fingerprint("org/model", "def")


def test_packaged_teacher_encodes_normalised_rows():
    spec = TeacherSpec()
    fp, max_len = describe(spec)
    assert max_len == 256
    teacher = Teacher(spec, device="cpu")
    out = teacher.encode(["a cat sat", "quantum chromodynamics"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert teacher.cache_name == spec.cache_name(fp, 256)
    assert TeacherSpec(max_length=128).cache_name(fp, 128) != teacher.cache_name


def test_a_teacher_that_does_not_load_is_a_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="teacher .*broken.* does not load"):
        Teacher(TeacherSpec(teacher=str(tmp_path / "broken")), device="cpu")
