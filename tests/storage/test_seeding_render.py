import hashlib

import numpy as np
import pyarrow as pa
import pytest

from storage import QuarryError, format_table, stable_rng, stable_seed, stable_unit
from storage.render import query_format, write_result


def test_stable_seed_equals_the_formulas_it_replaced():
    """Four modules hashed their keys by hand; the shared helper must give the same numbers,
    or every split, sampled negative, batch order and dropout draw would change."""
    def old_select_rng(seed, example_id):  # miners/select.py sample_rng
        digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "big"))

    def old_export_rng(seed, *parts):  # pipelines/train/export.py _rng
        digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "big"))

    def old_train_seed(*parts):  # trainers/train_loop.py _seed
        return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")

    def old_split_unit(seed, example_id):  # pipelines/builders/tasks.py assign_split
        return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "big") / 2.0**64

    for seed, key in [(0, "vital-desc2article:abc"), (7, "x"), (123, "é:ü")]:
        assert np.array_equal(stable_rng(seed, key).permutation(50), old_select_rng(seed, key).permutation(50))
        assert np.array_equal(stable_rng(seed, "task", key).permutation(50),
                              old_export_rng(seed, "task", key).permutation(50))
        assert stable_seed(seed, "step", 3, 1, nbytes=4) == old_train_seed(seed, "step", 3, 1)
        assert stable_unit(seed, key) == old_split_unit(seed, key)
    assert 0 <= stable_unit(1, "a") < 1 and stable_seed(1, "a") != stable_seed(1, "b")


def test_format_table_aligns_columns_and_strips_trailing_space():
    out = format_table(("task", "n", "note"), [("a", "10", ""), ("long-task", "7", "x")])
    assert out.splitlines() == ["task       n   note", "a          10", "long-task  7   x"]


def test_query_format_comes_from_the_flag_or_the_extension():
    assert query_format(None, None) == "table"
    assert query_format(None, "out.parquet") == "parquet" and query_format("csv", "out.txt") == "csv"
    with pytest.raises(QuarryError, match="cannot tell the format of out.txt"):
        query_format(None, "out.txt")
    with pytest.raises(QuarryError, match="needs --out"):
        write_result(pa.table({"a": [1]}), "parquet", None)
