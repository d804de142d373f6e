"""The manifest of one committed dataset version.

Its presence is the commit marker: a version directory without a manifest is invisible.
It carries what is needed to trust and reproduce the data: schema, row count, content
hash, the config and the input versions it was built from, the code version, and stats.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

MANIFEST_NAME = "_manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class InputRef:
    """A dataset version this one was built from."""

    kind: str
    name: str
    version: str
    content_hash: str


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the version directory; "../v0001/part-00000.parquet" when carried
    rows: int
    bytes: int
    sha256: str = ""


@dataclass
class Manifest:
    kind: str
    name: str
    version: str
    created_at: str
    num_rows: int
    num_bytes: int
    content_hash: str
    schema: list[dict[str, str]]
    files: list[FileEntry]
    config: dict[str, Any] = field(default_factory=dict)
    inputs: list[InputRef] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)  # reports, plots: files beside the parts
    code_version: str = ""
    arrow_schema: str = ""  # base64 Arrow IPC schema: the exact types, for readers
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        raw = json.loads(data)
        raw["files"] = [FileEntry(**f) for f in raw.get("files", [])]
        raw["inputs"] = [InputRef(**i) for i in raw.get("inputs", [])]
        return cls(**raw)

    def arrow(self) -> pa.Schema | None:
        if not self.arrow_schema:
            return None
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))

    def input_ref(self) -> InputRef:
        return InputRef(self.kind, self.name, self.version, self.content_hash)


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def describe_schema(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]
