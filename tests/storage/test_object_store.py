"""The catalog on an S3-compatible store (moto on loopback): exclusive create, and two
writers racing for the same version number."""

import threading

import pyarrow as pa
import pytest

from storage import Catalog, CatalogError
from storage.exclusive import create_exclusive
from storage.writer import DatasetWriter


@pytest.mark.parametrize("where", ["local", "s3"])
def test_create_exclusive_never_overwrites(where, tmp_path, request):
    root = Catalog(str(tmp_path) if where == "local" else request.getfixturevalue("s3_root")).root
    path = root.path("a", "claim.json")
    assert create_exclusive(root, path, b"first") is True
    assert create_exclusive(root, path, b"second") is False
    assert root.read_bytes(path) == b"first"


def _racing_writers(catalog: Catalog, monkeypatch) -> list:
    """Two writers of one dataset that both read the version list before either claims."""
    barrier = threading.Barrier(2, timeout=30)
    real = Catalog.all_version_numbers
    seen: dict[int, int] = {}

    def numbers_then_wait(self, kind, name):
        out = real(self, kind, name)
        me = threading.get_ident()
        seen[me] = seen.get(me, 0) + 1
        if seen[me] == 1:
            barrier.wait()  # both have computed the same next number now
        return out

    monkeypatch.setattr(Catalog, "all_version_numbers", numbers_then_wait)
    results, errors = [None, None], []

    def write(i):
        try:
            with DatasetWriter(catalog, "corpus", "shared") as w:
                w.write_table(pa.table({"doc_id": [f"w{i}-{j}" for j in range(5)], "writer": [i] * 5}))
                results[i] = w.commit(config={"writer": i})
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_racing_writers_end_as_distinct_versions(where, tmp_path, request, monkeypatch):
    catalog = Catalog(str(tmp_path / "root") if where == "local" else request.getfixturevalue("s3_root"))
    manifests = _racing_writers(catalog, monkeypatch)
    monkeypatch.undo()
    assert sorted(m.version for m in manifests) == ["v0001", "v0002"]
    for m in manifests:
        table = catalog.read_table("corpus", "shared", m.version)
        assert set(table.column("writer").to_pylist()) == {m.config["writer"]}  # nothing overwritten
        assert catalog.manifest("corpus", "shared", m.version).content_hash == m.content_hash


@pytest.mark.parametrize("where", ["local", "s3"])
def test_verify_names_a_changed_or_missing_file(where, tmp_path, request):
    catalog = Catalog(str(tmp_path / "root") if where == "local" else request.getfixturevalue("s3_root"))
    m = catalog.write_table("corpus", "c", pa.table({"doc_id": ["a", "b"]}))
    assert catalog.verify("corpus", "c").version == m.version
    path = catalog.files("corpus", "c")[0]
    data = catalog.root.read_bytes(path)
    with catalog.root.fs.open_output_stream(path) as f:  # same size, one byte changed
        f.write(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    with pytest.raises(CatalogError, match=r"corpus/c v0001: part-00000.parquet does not match its manifest"):
        catalog.verify("corpus", "c")
    catalog.root.fs.delete_file(path)
    with pytest.raises(CatalogError, match="part-00000.parquet is missing"):
        catalog.verify("corpus", "c")
