"""What every stage runs on: Ray (started or joined), ordered writes of Ray blocks, the
shared encoding service, and Ray jobs.

- ``local_ray``: ``ensure_ray``, a private local Ray on loopback, or a cluster's;
- ``ordered_writes``: Ray blocks written as Parquet files in a stable order;
- ``encoding``: ``embed_missing``, the encoder pool (or the driver) filling a cache;
- ``jobs``: ``quarry submit`` and ``quarry jobs`` through Ray's Job Submission SDK.
"""
