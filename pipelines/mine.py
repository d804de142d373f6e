"""``quarry mine``: hard negatives from a teacher retriever, as a chain of Ray stages.

    quarry mine [--examples vital] [--tasks a,b] [--strategy topk_perc_pos] [--teacher PATH] ...

1. search (``pipelines.mine_search``): candidate pools, teacher embeddings through the
   cache (what it lacks is encoded in the driver or on a Ray Data actor pool,
   ``pipelines.embed_stage``), FAISS top-k per query; queries a change since the last mine
   of this name cannot reach are not searched and keep their negatives
   (``pipelines.mine_reuse``);
2. select (``pipelines.mine_select``): one Ray task per chunk of queries applies the rules
   of ``miners.select``, vectorised (``miners.select_batch``);
3. write (``pipelines.mine_write``): the report, then ``rejections/<name>``,
   ``searched/<name>`` and ``negatives/<name>``, each committed atomically, and the drift
   report against the previous negatives (``pipelines.mine_drift``).

Each stage hands the next a typed result (``SearchResult``, ordered Arrow blocks,
``MineResult``); the config and the per-task plans are in ``pipelines.mine_config``.
"""

from __future__ import annotations

import datetime as _dt
import uuid

from pipelines.mine_config import MineConfig
from pipelines.mine_search import search
from pipelines.mine_select import select_on_ray
from pipelines.mine_write import MineResult, write_mined
from storage import Catalog

__all__ = ["MineConfig", "MineResult", "mine"]


def mine(cfg: MineConfig, catalog: Catalog) -> MineResult:
    searched = search(cfg, catalog)  # starts Ray once its inputs are found and the teacher resolved
    run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    blocks = select_on_ray(searched, cfg.chunk_rows, run_id)
    return write_mined(cfg, catalog, searched, blocks, run_id)
