"""build_once: one build however many processes ask, and never a half folder."""

import multiprocessing
import os

import pytest

from storage.cache_folder import VERIFIED, build_once, is_built


def _write(marker_dir: str):
    def build(folder: str) -> None:
        os.makedirs(folder)
        with open(os.path.join(folder, "weights"), "w") as f:
            f.write("w")
        # one file per build, so the test can count how many builds ran
        open(os.path.join(marker_dir, f"built-by-{os.getpid()}"), "w").close()
    return build


def _first_use(dest: str, marker_dir: str) -> str:
    return build_once(dest, _write(marker_dir))


def test_a_build_lands_marked_and_a_second_call_does_not_build_again(tmp_path):
    dest, marks = str(tmp_path / "cache" / "model"), tmp_path / "marks"
    marks.mkdir()
    assert build_once(dest, _write(str(marks))) == dest
    assert sorted(os.listdir(dest)) == sorted(["weights", VERIFIED]) and is_built(dest)
    build_once(dest, lambda folder: pytest.fail("built twice"))
    assert len(os.listdir(marks)) == 1


def test_a_failed_build_leaves_nothing_where_the_folder_is_looked_for(tmp_path):
    dest = str(tmp_path / "model")

    def broken(folder: str) -> None:
        os.makedirs(folder)
        open(os.path.join(folder, "half"), "w").close()
        raise ValueError("the source is damaged")

    with pytest.raises(ValueError, match="damaged"):
        build_once(dest, broken)
    assert sorted(os.listdir(tmp_path)) == ["model.lock"]


def test_an_unmarked_leftover_is_replaced(tmp_path):
    dest, marks = tmp_path / "model", tmp_path / "marks"
    dest.mkdir()
    marks.mkdir()
    (dest / "stale").write_text("from a build that never finished")
    build_once(str(dest), _write(str(marks)))
    assert sorted(os.listdir(dest)) == sorted(["weights", VERIFIED])


def test_concurrent_first_uses_make_one_copy(tmp_path):
    dest, marks = str(tmp_path / "model"), tmp_path / "marks"
    marks.mkdir()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        found = pool.starmap(_first_use, [(dest, str(marks))] * 8)
    assert set(found) == {dest}
    assert len(os.listdir(marks)) == 1
    assert sorted(os.listdir(tmp_path)) == ["marks", "model", "model.lock"]
