"""``quarry mine``: hard negatives from a teacher retriever, as a chain of Ray stages.

    quarry mine [--examples vital] [--tasks a,b] [--strategy topk_perc_pos] [--teacher PATH] ...

Reading order, one module per step:

1. ``config``: ``MineConfig`` and the plan of each task (which pool it searches, which
   selection rules it uses);
2. ``search``: candidate pools, teacher embeddings through the cache (what it lacks is
   encoded by ``pipelines.runtime.encoding``), FAISS top-k per query; queries a change since
   the last mine of this name cannot reach are not searched and keep their negatives
   (``reuse``);
3. ``select``: one Ray task per chunk of queries applies the rules of ``miners.select``,
   vectorised (``miners.select_batch``);
4. ``write``: the report, then ``rejections/<name>``, ``searched/<name>`` and
   ``negatives/<name>``, each committed atomically, with the texts put back in by pool
   position (``texts``); then the drift report against the previous negatives (``drift``).

Each step hands the next a typed result (``SearchResult``, ordered Arrow blocks,
``MineResult``).
"""

from __future__ import annotations

import datetime as _dt
import uuid

from pipelines.mine.config import MineConfig
from pipelines.mine.search import search
from pipelines.mine.select import select_on_ray
from pipelines.mine.write import MineResult, write_mined
from storage import Catalog

__all__ = ["MineConfig", "MineResult", "mine"]


def mine(cfg: MineConfig, catalog: Catalog) -> MineResult:
    searched = search(cfg, catalog)  # starts Ray once its inputs are found and the teacher resolved
    run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    blocks = select_on_ray(searched, cfg.chunk_rows, run_id)
    return write_mined(cfg, catalog, searched, blocks, run_id)
