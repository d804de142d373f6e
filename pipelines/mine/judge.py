"""Mining, between search and selection: a judge rescores each query's positives and the
candidates the teacher retrieved, and selection's score rules run on the judge's scores.

The teacher stays the retriever (it searches the whole pool, so it should be cheap); the
judge reads only what the teacher put in front of it, so it can be a model too slow to
search with:

- ``bi-encoder``: a sentence-transformers model. It embeds the query strings and the pool
  texts that are someone's candidate or positive (not the whole pool), through the same
  encoding service and into its own embedding cache, so a second mine embeds nothing
  again; its score is the cosine, as the teacher's.
- ``cross-encoder``: a sentence-transformers ``CrossEncoder`` that reads query and passage
  together (sentence-transformers' ``mine_hard_negatives`` offers the same); its score is
  the model's own (a probability for a one-label model). Nothing is cached: a pair's score
  needs both texts.

The judge changes no candidate list or order: the threshold of the positive-aware strategies
is computed from the judge's score of the positive, and candidates are kept or dropped by
the judge's score of them. Both scores are written (``neg_score`` the teacher's,
``neg_judge_score`` the judge's). Tested by tests/pipelines/mine/test_judge_ray.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from miners.cache import EmbeddingCache, EmbedStats
from miners.teacher import ResolvedTeacher, TeacherSpec, cache_key, resolve_teacher
from pipelines.mine.config import CROSS_ENCODER, JudgeSpec
from pipelines.runtime.encoding import embed_missing, encoder_shape
from storage import Catalog, InputError, first_line
from storage.packaged import check_folder_or_hub_id, resolve_packaged

log = logging.getLogger("quarry")

JUDGE_COLUMNS = ("judge_cand_scores", "judge_positive_scores")


@dataclass
class Judged:
    queries: pa.Table  # the search's query rows, the judge columns filled
    label: str  # the judge as the rows name it
    stats: EmbedStats | None  # a bi-encoder's embedding of what its cache lacked
    inputs: list = field(default_factory=list)  # the judge's embedding cache version, for provenance


def resolve_judge(spec: JudgeSpec) -> ResolvedTeacher | str:
    """The judge found, before any encoding: a bi-encoder resolved as a teacher is, or a
    cross-encoder's folder (or hub id). A judge that is not there fails here, in one line."""
    if spec.kind == CROSS_ENCODER:
        path = resolve_packaged(spec.model)
        check_folder_or_hub_id(path, "--judge")
        return path
    return resolve_teacher(TeacherSpec(teacher=spec.model, max_length=spec.max_length), role="--judge")


def judge_candidates(spec: JudgeSpec, resolved: ResolvedTeacher | str, catalog: Catalog, queries: pa.Table,
                     pool_texts: dict[str, list[str]], pool_of_task: dict[str, str], query_strings: dict[str, str],
                     batch: dict) -> Judged:
    """``resolved``: ``resolve_judge``'s; ``queries``: the search's rows; ``pool_texts``:
    pool name -> texts by position; ``query_strings``: example id -> the string the teacher
    encoded; ``batch``: the mine's batch_size, encoders, max_batch_tokens and encode_in."""
    if spec.kind == CROSS_ENCODER:
        return _cross(spec, resolved, queries, pool_texts, pool_of_task, query_strings)
    return _bi(resolved, catalog, queries, pool_texts, pool_of_task, query_strings, batch)


def _pairs(queries: pa.Table, column: str) -> list[list[int]]:
    return queries.column(column).to_pylist()


def _with_scores(queries: pa.Table, cand: list[np.ndarray], pos: list[np.ndarray]) -> pa.Table:
    for name, values in zip(JUDGE_COLUMNS, (cand, pos)):
        column = pa.array([v.astype(np.float32) for v in values], pa.list_(pa.float32()))
        queries = queries.set_column(queries.schema.get_field_index(name), name, column)
    return queries


def _bi(judge: ResolvedTeacher, catalog: Catalog, queries: pa.Table, pool_texts: dict[str, list[str]],
        pool_of_task: dict[str, str], query_strings: dict[str, str], batch: dict) -> Judged:
    judge = judge.on_device(TeacherSpec().precision, encoder_shape().device)
    tasks, ids = queries.column("task").to_pylist(), queries.column("example_id").to_pylist()
    cands, positives = _pairs(queries, "cand_positions"), _pairs(queries, "positive_positions")
    texts = {cache_key(query_strings[e]): query_strings[e] for e in ids}
    for task, cand, pos in zip(tasks, cands, positives):
        pool = pool_texts[pool_of_task[task]]
        for p in (*cand, *pos):
            if p >= 0:
                texts.setdefault(cache_key(pool[p]), pool[p])
    log.info("mine: judge %s (bi-encoder) scores %d queries' candidates: %d texts", judge.label, len(ids), len(texts))
    cache = EmbeddingCache(catalog, judge.cache_name, dim=None, config=judge.provenance())
    stats = embed_missing(texts, cache, judge, batch["batch_size"], batch["encoders"], batch["max_batch_tokens"],
                          batch["encode_in"])
    keys = list(texts)
    row_of = {k: i for i, k in enumerate(keys)}
    vectors = cache.load(keys)
    cand_scores, pos_scores = [], []
    for task, eid, cand, pos in zip(tasks, ids, cands, positives):
        pool = pool_texts[pool_of_task[task]]
        q = vectors[row_of[cache_key(query_strings[eid])]]
        docs = vectors[[row_of[cache_key(pool[p])] if p >= 0 else 0 for p in cand]]
        cand_scores.append(np.where(np.asarray(cand) >= 0, docs @ q, 0.0))
        pos_scores.append(vectors[[row_of[cache_key(pool[p])] for p in pos]] @ q)
    return Judged(_with_scores(queries, cand_scores, pos_scores), judge.label, stats, [cache.input_ref()])


def _cross(spec: JudgeSpec, path: str, queries: pa.Table, pool_texts: dict[str, list[str]],
           pool_of_task: dict[str, str], query_strings: dict[str, str]) -> Judged:
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(path, max_length=spec.max_length, device=encoder_shape().device)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"--judge {spec.model!r} does not load as a CrossEncoder: {first_line(e)}") from None
    tasks, ids = queries.column("task").to_pylist(), queries.column("example_id").to_pylist()
    cands, positives = _pairs(queries, "cand_positions"), _pairs(queries, "positive_positions")
    pairs, at = [], {}
    for task, eid, cand, pos in zip(tasks, ids, cands, positives):
        pool = pool_of_task[task]
        for p in (*cand, *pos):
            if p >= 0 and (eid, pool, p) not in at:
                at[(eid, pool, p)] = len(pairs)
                pairs.append((query_strings[eid], pool_texts[pool][p]))
    log.info("mine: judge %s (cross-encoder) reads %d query-passage pairs", spec.model, len(pairs))
    scores = np.asarray(model.predict(pairs, batch_size=spec.batch_size, show_progress_bar=False,
                                      convert_to_numpy=True), dtype=np.float32).reshape(len(pairs))
    cand_scores = [np.array([scores[at[(e, pool_of_task[t], p)]] if p >= 0 else 0.0 for p in cand])
                   for t, e, cand in zip(tasks, ids, cands)]
    pos_scores = [np.array([scores[at[(e, pool_of_task[t], p)]] for p in pos]) for t, e, pos in zip(tasks, ids,
                                                                                                    positives)]
    return Judged(_with_scores(queries, cand_scores, pos_scores), f"{spec.model} (cross-encoder)", None)
