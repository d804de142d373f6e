from pipelines.train.formats import MinedExample, dataset_name, flagembedding_line, sentence_transformers_table

E = MinedExample(task="t-1", instruction="Instruct: find\nQuery: ", query="q", positive="p", positive_score=0.9,
                 positives=("p", "p2"), negatives=("n1", "n2"), negative_scores=(0.5, 0.4))


def test_sentence_transformers_layouts():
    assert sentence_transformers_table([E], "n-tuple", False).to_pylist() == [
        {"anchor": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2"}]
    assert sentence_transformers_table([E], "n-tuple", True).column("scores").to_pylist() == [[0.9, 0.5, 0.4]]
    assert sentence_transformers_table([E], "triplet", True).to_pylist() == [
        {"anchor": "q", "positive": "p", "negative": "n1", "scores": [0.9, 0.5]},
        {"anchor": "q", "positive": "p", "negative": "n2", "scores": [0.9, 0.4]}]
    assert sentence_transformers_table([E], "labeled-list", False).to_pylist() == [
        {"anchor": "q", "documents": ["p", "n1", "n2"], "labels": [1, 0, 0]}]
    assert sentence_transformers_table([E], "labeled-list", True).column_names == ["anchor", "documents", "scores"]


def test_flagembedding_lines_and_dataset_names():
    assert flagembedding_line(E, False) == {"query": "q", "pos": ["p", "p2"], "neg": ["n1", "n2"],
                                            "prompt": "Instruct: find\nQuery: "}
    scored = flagembedding_line(E, True)
    assert scored["pos"] == ["p"] and scored["pos_scores"] == [0.9] and scored["neg_scores"] == [0.5, 0.4]
    assert dataset_name("vital-desc2article") == "vital_desc2article"
