"""Create a file only if nothing is there yet, atomically: the one primitive that makes two
concurrent writers of a dataset safe (``DatasetWriter`` claims a version number with it).

- a local root: ``open(..., O_CREAT | O_EXCL)``;
- S3 and S3-compatible stores: a PUT with ``If-None-Match: *`` (S3 conditional writes,
  through boto3, because pyarrow's S3 filesystem cannot send that header). A store that
  already holds the key answers 412 and nothing is overwritten;
- any other filesystem: there is no such primitive, so ``supports_exclusive_create`` is
  False and the caller says so (docs/storage.md).
"""

from __future__ import annotations

import os
import urllib.parse

import pyarrow.fs as pafs

from storage.errors import CatalogError
from storage.root import DataRoot


def supports_exclusive_create(root: DataRoot) -> bool:
    return root.is_local or isinstance(root.fs, pafs.S3FileSystem)


def create_exclusive(root: DataRoot, path: str, data: bytes) -> bool:
    """Write ``data`` at ``path`` if no file is there; False (and nothing written) if one is."""
    if root.is_local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if isinstance(root.fs, pafs.S3FileSystem):
        return _s3_put_if_absent(root, path, data)
    raise CatalogError(f"{type(root.fs).__name__} has no exclusive create")


def _s3_put_if_absent(root: DataRoot, path: str, data: bytes) -> bool:
    import botocore.exceptions

    bucket, _, key = path.partition("/")
    try:
        _s3_client(root.uri).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except botocore.exceptions.ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 412 or e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise CatalogError(f"{root.uri}: conditional write of {path} failed: {e}") from e
    return True


_CLIENTS: dict[str, object] = {}


def _s3_client(uri: str):
    """A boto3 client for the store the root URI names: the same endpoint, scheme, region and
    (if the URI carries them) keys that pyarrow's ``FileSystem.from_uri`` reads from it;
    otherwise boto3's usual credential chain, which reads the same environment variables."""
    if uri not in _CLIENTS:
        import boto3

        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(uri).query))
        endpoint = query.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
        _CLIENTS[uri] = boto3.client(
            "s3", endpoint_url=endpoint, region_name=query.get("region") or None,
            aws_access_key_id=query.get("access_key") or None,
            aws_secret_access_key=query.get("secret_key") or None)
    return _CLIENTS[uri]
