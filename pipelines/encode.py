"""``quarry encode --model PATH --input FILE --out FILE.parquet``: embeddings from the shell."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from storage import InputError


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


def encode_file(model_path: str, input_path: str, out_path: str, column: str = "text",
                instruction: str | None = None, batch_size: int = 32) -> int:
    from trainers import EmbeddingModel

    table = read_texts(input_path, column)
    model = EmbeddingModel.from_pretrained(model_path)
    vectors = model.encode([t or "" for t in table.column(column).to_pylist()], instruction=instruction,
                           batch_size=batch_size)
    flat = pa.array(vectors.reshape(-1))
    table = table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    pq.write_table(table, out_path)
    return table.num_rows
