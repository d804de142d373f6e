"""Quarry miners: the teacher, the embedding cache, FAISS search, negative selection, the report.

No Ray here: the Ray stages that run these pieces live in ``pipelines`` (``embed_stage``,
``mine_*``). Every piece is a plain function or class that the tests call directly.
"""

from miners.cache import EmbeddingCache, EmbedStats
from miners.index import IndexConfig, Searcher
from miners.report import TaskInfo, TaskReport, build_report
from miners.select import QueryFacts, Selection, SelectionConfig, select_for_query
from miners.teacher import ResolvedTeacher, Teacher, TeacherSpec, resolve_teacher

__all__ = ["EmbedStats", "EmbeddingCache", "IndexConfig", "QueryFacts", "ResolvedTeacher", "Searcher", "Selection",
           "SelectionConfig", "TaskInfo", "TaskReport", "Teacher", "TeacherSpec", "build_report", "resolve_teacher",
           "select_for_query"]
