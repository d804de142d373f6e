"""Quarry storage: the data root, versioned Parquet datasets with manifests, and read-only SQL.

The bottom layer: it imports none of ``miners``, ``trainers`` or ``pipelines``.
"""

from storage.catalog import Catalog, DatasetRef, human_bytes
from storage.errors import CatalogError, InputError, QuarryError, ReadOnlyError
from storage.manifest import InputRef, Manifest
from storage.names import validate_kind, validate_name, validate_version
from storage.query import QueryEngine, check_read_only, parse_pin
from storage.root import DataRoot
from storage.writer import DatasetWriter

__all__ = [
    "Catalog", "CatalogError", "DataRoot", "DatasetRef", "DatasetWriter", "InputError", "InputRef",
    "Manifest", "QuarryError", "QueryEngine", "ReadOnlyError", "check_read_only", "human_bytes",
    "parse_pin", "validate_kind", "validate_name", "validate_version",
]
