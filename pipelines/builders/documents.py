"""Pure per-batch document transforms: cleaning, stable ids, hashing, passage splitting.

Plain functions on pyarrow tables so the Ray stage (``pipelines.builders.corpus``) and the tests call
exactly the same code.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass

import pyarrow as pa

from storage import InputError, first_line
from storage.packaged import check_folder_or_hub_id
from storage.schemas import corpus_schema

# Status values of the ``_status`` column: rows that are not "ok" are counted, then dropped.
OK = "ok"
EMPTY_TEXT = "empty_text"
MISSING_TITLE = "missing_title"

_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_LINE_EDGES = re.compile(r" *\n *")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def clean_text(text: str | None) -> str:
    """NFC-normalise, drop control characters, collapse runs of spaces and blank lines."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def stable_doc_id(source: str, key: str) -> str:
    """Id derived from where a document comes from and its title (or source id)."""
    return hashlib.sha256(f"{source}\x00{key}".encode("utf-8")).hexdigest()[:16]


def split_passages(text: str, max_chars: int | None = None, max_tokens: int | None = None,
                   count_tokens=None) -> list[str]:
    """Greedy packing of whole sentences into passages under a character or token budget.

    A single sentence over budget is cut at whitespace (characters) or into token-budget
    pieces by words (tokens). Without a budget the text is one passage.
    """
    if not max_chars and not max_tokens:
        return [text]
    if max_tokens and count_tokens is None:
        raise ValueError("a token budget needs a token counter")

    def size(s: str) -> int:
        return count_tokens(s) if max_tokens else len(s)

    budget = max_tokens or max_chars
    pieces: list[str] = []
    for paragraph in text.split("\n\n"):
        for sentence in _SENTENCE_END.split(paragraph):
            if size(sentence) <= budget:
                pieces.append(sentence)
            else:
                pieces.extend(_cut_long(sentence, budget, size))
    return _pack(pieces, budget, size)


def _pack(pieces: list[str], budget: int, size) -> list[str]:
    """Join consecutive pieces with spaces while the result stays within the budget."""
    packed: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and size(candidate) > budget:
            packed.append(current)
            current = piece
        else:
            current = candidate
    if current:
        packed.append(current)
    return packed


def _cut_long(sentence: str, budget: int, size) -> list[str]:
    out = _pack(sentence.split(" "), budget, size)
    # A single "word" longer than the budget (no spaces) is cut hard by characters.
    final = []
    for piece in out:
        while size(piece) > budget and len(piece) > 1:
            cut = max(1, len(piece) * budget // max(size(piece), 1))
            final.append(piece[:cut])
            piece = piece[cut:]
        final.append(piece)
    return final


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    check_folder_or_hub_id(path, "--tokenizer")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:  # no such folder or hub id, or not a tokenizer
        raise InputError(f"--tokenizer {path!r} does not load: {first_line(e)}") from None


def token_counter(tokenizer_path: str):
    tok = _tokenizer(tokenizer_path)
    return lambda s: len(tok(s, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class NormalizeOptions:
    source: str  # provenance label, part of every doc_id
    default_lang: str
    metadata_columns: tuple[str, ...] = ()
    passage_chars: int | None = None
    passage_tokens: int | None = None
    tokenizer: str | None = None
    title_in_text: bool = False  # each text begins with its title, as mteb encodes a BEIR document



def normalize_documents(batch: pa.Table, opts: NormalizeOptions) -> pa.Table:
    """Raw rows (``title``, ``text``, optional ``id``/``lang``, metadata) -> corpus rows.

    A row's ``id`` is kept as its ``source_id`` and names its document (``doc_id`` is derived
    from it, else from the title); every passage of a split text keeps its row's source id.

    Every input row yields at least one output row; unusable ones carry a ``_status`` other
    than "ok" so the stage can count them before dropping them.
    """
    passages = bool(opts.passage_chars or opts.passage_tokens)
    count = token_counter(opts.tokenizer) if opts.passage_tokens else None
    cols = {name: batch.column(name).to_pylist() for name in batch.column_names}
    n = batch.num_rows
    titles = cols.get("title", [None] * n)
    texts = cols.get("text", [None] * n)
    ids = cols.get("id", [None] * n)
    langs = cols.get("lang", [None] * n)
    out: dict[str, list] = {f.name: [] for f in corpus_schema(opts.metadata_columns, passages)}
    out["_status"] = []
    for i in range(n):
        title = clean_text(titles[i])
        text = clean_text(texts[i])
        if opts.title_in_text and title:
            text = f"{title} {text}".strip()
        source_id = str(ids[i]) if ids[i] not in (None, "") else None
        key = source_id or title
        status = OK if text else EMPTY_TEXT
        if status == OK and not key:
            status = MISSING_TITLE
        doc_id = stable_doc_id(opts.source, key)
        chunks = split_passages(text, opts.passage_chars, opts.passage_tokens, count) if status == OK else [text]
        for j, chunk in enumerate(chunks):
            out["doc_id"].append(f"{doc_id}-{j:04d}" if passages else doc_id)
            out["source_id"].append(source_id)
            out["title"].append(title)
            out["text"].append(chunk)
            out["lang"].append(langs[i] or opts.default_lang)
            out["source"].append(opts.source)
            out["content_hash"].append(content_hash(chunk))
            if passages:
                out["parent_id"].append(doc_id)
                out["passage_index"].append(j)
            for c in opts.metadata_columns:
                value = cols.get(c, [None] * n)[i]
                out[c].append(None if value is None else clean_text(str(value)))
            out["_status"].append(status)
    schema = corpus_schema(opts.metadata_columns, passages).append(pa.field("_status", pa.string()))
    return pa.Table.from_pydict(out, schema=schema)
