"""``quarry encode --model PATH --input FILE --out FILE.parquet``: embeddings from the shell.

Tested by tests/pipelines/test_s3_root.py and tests/pipelines/cli/test_cli_errors.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage import ConfigError, InputError


def read_texts(path: str, column: str) -> pa.Table:
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if path.endswith((".parquet", ".pq")):
        table = pq.read_table(path)
    elif path.endswith((".jsonl", ".json")):
        rows = []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    rows.append(json.loads(raw.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise InputError(f"{path}:{lineno}: not a UTF-8 JSON object ({type(e).__name__})") from None
        table = pa.Table.from_pylist(rows)
    else:
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f if line.strip()]
        except UnicodeDecodeError:
            raise InputError(f"{path}: not valid UTF-8") from None
        table = pa.table({column: lines})
    if column not in table.column_names:
        raise InputError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
    if not pa.types.is_string(table.schema.field(column).type) and not pa.types.is_large_string(
            table.schema.field(column).type):
        raise InputError(f"{path}: column {column!r} must hold text")
    return table


@dataclass
class EncodeConfig:
    model: str  # a saved Quarry model folder, or a backbone path / hub id
    input: str  # JSONL, Parquet or plain text (one text per line)
    out: str  # Parquet: the input columns + embedding
    text_column: str = "text"
    instruction: str | None = None  # prefix for every text (queries)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"must be at least 1, got {self.batch_size}")
        out_dir = os.path.dirname(os.path.abspath(self.out))
        if not os.path.isdir(out_dir):
            raise ConfigError("out", f"{self.out}: no such folder {out_dir}")


def encode_file(cfg: EncodeConfig) -> int:
    """Embed every text of ``cfg.input`` into ``cfg.out``; returns the rows written.

    The output appears whole or not at all: it is written beside its place and renamed.
    """
    from trainers import EmbeddingModel

    table = read_texts(cfg.input, cfg.text_column)
    model = EmbeddingModel.from_pretrained(cfg.model)
    vectors = model.encode([t or "" for t in table.column(cfg.text_column).to_pylist()], instruction=cfg.instruction,
                           batch_size=cfg.batch_size)
    flat = pa.array(vectors.reshape(-1))
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    tmp = f"{cfg.out}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, cfg.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return table.num_rows
