"""A small files source that tests can edit: embedded articles written as JSONL, and a task
spec over them (a retrieval task and a classification task)."""

import json

SMALL_SPEC = """
name: small
corpus: small
tasks:
  - name: desc
    type: retrieval
    source: {corpus: small}
    columns: {query: description, positive_ids: doc_id, id: doc_id}
    instruction: Retrieve the article
  - name: topic
    type: classification
    source: {corpus: small}
    columns: {text: text, label: topic, id: doc_id}
    instruction: Classify the topic
    exclude_labels: [Uncategorized]
"""
SMALL_COLUMNS = "title=title,text=extract,description=description,topic=topic"


def write_jsonl(path, table) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row) + "\n")
