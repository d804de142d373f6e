import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from storage import Catalog, CatalogError, DataRoot
from storage.manifest import MANIFEST_NAME

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _table(n, offset=0):
    return pa.table({"id": [f"d{i}" for i in range(offset, offset + n)], "x": list(range(offset, offset + n))})


def test_commit_writes_parts_and_a_complete_manifest(catalog):
    m = catalog.write_table("corpus", "wiki", _table(5), config={"limit": 5})
    assert m.version == "v0001" and m.num_rows == 5
    vdir = catalog.version_path("corpus", "wiki", "v0001")
    assert sorted(os.listdir(vdir)) == [MANIFEST_NAME, "part-00000.parquet"]
    raw = json.load(open(os.path.join(vdir, MANIFEST_NAME)))
    for key in ("schema", "num_rows", "content_hash", "config", "inputs", "code_version", "created_at"):
        assert key in raw
    assert raw["schema"] == [{"name": "id", "type": "string"}, {"name": "x", "type": "int64"}]
    assert raw["config"] == {"limit": 5}
    assert raw["content_hash"].startswith("sha256:")
    assert catalog.read_table("corpus", "wiki").equals(_table(5))
    assert not os.path.exists(catalog.staging_path("corpus", "wiki"))


def test_versions_increase_and_latest_is_default(catalog):
    catalog.write_table("corpus", "wiki", _table(2))
    catalog.write_table("corpus", "wiki", _table(3, offset=10))
    assert catalog.versions("corpus", "wiki") == ["v0001", "v0002"]
    assert catalog.read_table("corpus", "wiki").num_rows == 3
    assert catalog.read_table("corpus", "wiki", "v0001").num_rows == 2
    with pytest.raises(CatalogError, match="no committed version v0009"):
        catalog.read_table("corpus", "wiki", "v0009")
    with pytest.raises(CatalogError, match="no corpus dataset named 'nope'"):
        catalog.manifest("corpus", "nope")


def test_unchanged_rebuild_is_not_a_new_version(catalog):
    catalog.write_table("corpus", "wiki", _table(4), config={"a": 1})
    with catalog.writer("corpus", "wiki") as w:
        w.write_table(_table(4))
        m = w.commit(config={"a": 1}, skip_if_unchanged=True)
    assert w.unchanged and m.version == "v0001"
    with catalog.writer("corpus", "wiki") as w:  # same bytes, different config: a new version
        w.write_table(_table(4))
        m = w.commit(config={"a": 2}, skip_if_unchanged=True)
    assert not w.unchanged and m.version == "v0002"


def test_empty_and_inconsistent_writes_are_refused(catalog):
    with pytest.raises(CatalogError, match="empty version"):
        catalog.write_table("corpus", "wiki", _table(0))
    with catalog.writer("corpus", "wiki") as w:
        w.write_table(_table(2))
        w.write_table(pa.table({"id": ["a"], "x": ["not an int"]}))
        with pytest.raises(CatalogError, match="disagree on schema"):
            w.commit()
    assert catalog.versions("corpus", "wiki") == []


def test_error_inside_writer_block_discards_staging(catalog):
    with pytest.raises(RuntimeError):
        with catalog.writer("corpus", "wiki") as w:
            w.write_table(_table(3))
            raise RuntimeError("stage failed")
    assert catalog.versions("corpus", "wiki") == []
    assert not os.path.exists(w.staging_dir)


def _run_crashing_writer(root, crash_point):
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT_DIR!r})
        import pyarrow as pa
        import storage.writer as wmod
        from storage import Catalog
        c = Catalog({root!r})
        w = c.writer("corpus", "wiki")
        w.write_table(pa.table({{"id": ["a", "b"]}}))
        if {crash_point!r} == "before_commit":
            os._exit(3)
        real = c.root.write_bytes_atomic
        def die(path, data):
            os._exit(3)   # killed after files moved in, before the manifest is written
        c.root.__class__.write_bytes_atomic = lambda self, p, d: die(p, d)
        w.commit()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr


@pytest.mark.integration  # a crashing writer in a child process
@pytest.mark.parametrize("crash_point", ["before_commit", "before_manifest"])
def test_crash_mid_write_leaves_no_visible_version(tmp_path, crash_point):
    root = str(tmp_path / "root")
    _run_crashing_writer(root, crash_point)
    catalog = Catalog(root)
    assert catalog.versions("corpus", "wiki") == []
    assert list(catalog.iter_datasets()) == []
    # A re-run commits cleanly, never reusing a number a crashed writer may have claimed.
    m = catalog.write_table("corpus", "wiki", _table(2))
    assert catalog.versions("corpus", "wiki") == [m.version]
    assert catalog.read_table("corpus", "wiki").num_rows == 2
    removed = catalog.gc()
    assert removed  # the debris of the crashed writer
    assert catalog.versions("corpus", "wiki") == [m.version]
    assert catalog.read_table("corpus", "wiki").num_rows == 2


def test_file_uri_root_reads_and_writes(tmp_path):
    uri = f"file://{tmp_path}/uri-root"
    root = DataRoot.resolve(uri)
    assert root.uri == uri and root.base == f"{tmp_path}/uri-root"
    catalog = Catalog(uri)
    catalog.write_table("examples", "t", _table(3))
    assert Catalog(uri).read_table("examples", "t").num_rows == 3
    assert os.path.exists(f"{tmp_path}/uri-root/examples/t/v0001/{MANIFEST_NAME}")


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    assert DataRoot.resolve().base == str(tmp_path / "home")
    assert DataRoot.resolve(str(tmp_path / "explicit")).base == str(tmp_path / "explicit")
    monkeypatch.delenv("QUARRY_HOME")
    assert DataRoot.resolve().base == os.path.abspath("./quarry-data")


def test_carried_files_make_an_append_only_dataset_without_copies(catalog):
    first = catalog.write_table("embeddings", "cache", _table(2))
    with catalog.writer("embeddings", "cache") as w:
        w.write_table(_table(3, offset=2))
        second = w.commit(carry=[(first.version, f) for f in first.files])
    with catalog.writer("embeddings", "cache") as w:
        w.write_table(_table(1, offset=5))
        third = w.commit(carry=[(second.version, f) for f in second.files])
    assert [f.path for f in third.files] == ["../v0001/part-00000.parquet", "../v0002/part-00000.parquet",
                                            "part-00000.parquet"]
    assert catalog.read_table("embeddings", "cache").column("id").to_pylist() == [f"d{i}" for i in range(6)]
    assert third.num_rows == 6 and len({first.content_hash, second.content_hash, third.content_hash}) == 3
    with catalog.writer("embeddings", "cache") as w:
        w.write_table(pa.table({"other": [1]}))
        with pytest.raises(CatalogError, match="do not match the schema"):
            w.commit(carry=[(third.version, f) for f in third.files])


def test_attachments_are_published_with_the_commit(catalog):
    with catalog.writer("negatives", "n") as w:
        w.write_table(_table(2))
        w.attach("report.json", b'{"ok": true}')
        m = w.commit()
    path = catalog.attachment_path("negatives", "n", m.version, "report.json")
    assert open(path, "rb").read() == b'{"ok": true}' and m.attachments == ["report.json"]
    with pytest.raises(CatalogError, match="reserved"):
        catalog.writer("negatives", "n").attach("x.parquet", b"")
