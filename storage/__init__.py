"""Quarry storage: the data root, versioned Parquet datasets with manifests, and read-only SQL.

The bottom layer: it imports none of ``miners``, ``trainers`` or ``pipelines``. It also
holds the few helpers every layer above shares: seeded randomness (``storage.seeding``),
models shipped in packages (``storage.packaged``) and text tables (``storage.render``).
"""

from storage.catalog import Catalog, DatasetRef, human_bytes
from storage.errors import CatalogError, ConfigError, InputError, QuarryError, ReadOnlyError, first_line
from storage.manifest import InputRef, Manifest
from storage.names import validate_kind, validate_name, validate_version
from storage.packaged import PACKAGED_MINILM, resolve_packaged
from storage.query import QueryEngine, check_read_only, parse_pin
from storage.render import format_table, print_query
from storage.root import DataRoot
from storage.seeding import mask_key, stable_rng, stable_seed, stable_unit
from storage.writer import DatasetWriter

__all__ = [
    "Catalog", "CatalogError", "ConfigError", "DataRoot", "DatasetRef", "DatasetWriter", "InputError", "InputRef",
    "Manifest", "PACKAGED_MINILM", "QuarryError", "QueryEngine", "ReadOnlyError", "check_read_only",
    "first_line", "format_table", "human_bytes", "parse_pin", "print_query", "resolve_packaged", "stable_rng", "stable_seed",
    "stable_unit", "mask_key", "validate_kind", "validate_name", "validate_version",
]
