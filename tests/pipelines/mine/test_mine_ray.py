"""quarry mine on a small corpus through real Ray: output rules, cache, Ray == in-process."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from miners.cache import EmbeddingCache, embeddings_table
from miners.teacher import TeacherSpec, resolve_teacher
from pipelines.builders.sources import load_embedded_table
from pipelines.cli import main
from pipelines.mine import MineConfig
from pipelines.mine.search import search
from pipelines.mine.select import SelectNegatives, select_on_ray
from pipelines.runtime.encoding import embed_missing
from storage import Catalog, CatalogError
from tests.pipelines.small_source import SMALL_COLUMNS, SMALL_SPEC, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("mine")
    root = str(base / "data")
    corpus = load_embedded_table("en", 120)
    write_jsonl(base / "docs.jsonl", corpus)
    (base / "spec.yaml").write_text(SMALL_SPEC)
    build = ["--root", root, "build", "wiki", "--name", "small", "--source", "files", "--path",
             str(base / "docs.jsonl"), "--columns", SMALL_COLUMNS]
    assert main(build) == 0
    assert main(["--root", root, "build", "tasks", "--spec", str(base / "spec.yaml")]) == 0
    # The actor pool, as on a cluster (the private local Ray encodes in the driver by
    # default: test_on_the_private_local_ray_the_driver_encodes_with_the_pools_vectors).
    assert main(["--root", root, "mine", "--examples", "small", "--depth", "40", "--encode-in", "actors"]) == 0
    return {"root": root, "base": base, "build": build, "corpus": corpus}


def test_negatives_follow_the_rules(setup):
    catalog = Catalog(setup["root"])
    neg = catalog.read_table("negatives", "small").to_pylist()
    examples = {r["example_id"]: r for r in catalog.read_table("examples", "small").to_pylist()}
    texts = {r["doc_id"]: r["text"] for r in catalog.read_table("corpus", "small").to_pylist()}
    assert neg
    per_query = {}
    conditioned = unconditioned = 0
    for r in neg:
        ex = examples[r["example_id"]]
        assert r["neg_id"] not in ex["positive_ids"] and r["neg_id"] != r["example_id"]
        if r["task_type"] == "retrieval":
            assert r["neg_text"] == texts[r["neg_id"]] != texts[ex["positive_ids"][0]]
            assert r["strategy"] == "topk_perc_pos"
            if r["threshold"] is not None:  # the default: a threshold where the teacher ranks the positive first
                assert r["neg_score"] <= 0.95 * r["positive_score"] + 1e-6
                assert r["threshold"] == pytest.approx(0.95 * r["positive_score"])
                conditioned += 1
            else:  # elsewhere the top-ranked eligible candidates, which may score near the positive
                unconditioned += 1
        else:
            assert r["neg_label"] != r["label"] and r["neg_text"] != ex["positive"]
        per_query[r["example_id"]] = per_query.get(r["example_id"], 0) + 1
    assert max(per_query.values()) == 7
    assert conditioned and unconditioned  # both kinds of query occur in this data


def test_provenance_report_and_rejections(setup):
    catalog = Catalog(setup["root"])
    m = catalog.manifest("negatives", "small")
    assert m.config["selection"]["strategy"] == "topk_perc_pos" and m.config["depth"] == 40
    assert {i.kind for i in m.inputs} == {"examples", "corpus", "embeddings", "rejections"}
    assert m.attachments == ["report.json", "scores.png"]
    report = json.load(open(catalog.attachment_path("negatives", "small", m.version, "report.json")))
    assert report["topic"]["rejected"]["same_class"] > 0 and report["desc"]["queries_mined"] > 0
    assert report["desc"]["queries_skipped"] == {}  # every positive is in the pool: nothing to count
    png = open(catalog.attachment_path("negatives", "small", m.version, "scores.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rejected = catalog.read_table("rejections", "small").to_pylist()
    assert {r["reason"] for r in rejected} >= {"is_positive", "same_class"}
    assert all(r["cand_label"] == r["label"] for r in rejected if r["reason"] == "same_class")


def test_the_margin_listing_reads_exactly_what_plain_top_k_would_take(setup, capsys, tmp_path):
    """quarry margins on the perc_pos run's stored rows against a plain top-k mine of the
    same queries: its candidates are that run's negatives, and each margin rejects those of
    them above the margin's threshold."""
    from miners.select import SelectionConfig

    root = setup["root"]
    assert main(["--root", root, "mine", "--examples", "small", "--depth", "40", "--strategy", "topk",
                 "--name", "small-topk"]) == 0
    capsys.readouterr()
    plot = tmp_path / "margins.png"
    assert main(["--root", root, "margins", "--negatives", "small", "--tasks", "desc", "--from", "0.8", "--to", "1",
                 "--step", "0.05", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    naive = Catalog(root).read_table("negatives", "small-topk").to_pylist()
    naive = [r for r in naive if r["task"] == "desc"]
    assert f"desc ({len(naive)} candidates)" in out
    for margin in (0.8, 0.85, 0.9, 0.95, 1.0):
        cut = SelectionConfig(margin=margin)
        rejected = sum(r["neg_score"] > cut.threshold(r["positive_score"]) for r in naive)
        line = next(x for x in out.splitlines() if x.startswith(f"{margin:g} "))
        assert line.split()[1] == str(rejected), (margin, line)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_embeds_nothing_and_a_changed_document_alone_is_re_embedded(setup, capsys):
    root = setup["root"]
    assert main(["--root", root, "mine", "--examples", "small", "--depth", "40"]) == 0
    assert "embedded 0 new texts" in capsys.readouterr().out
    changed = setup["corpus"].to_pylist()
    changed[5]["extract"] = changed[5]["extract"] + " An added sentence."
    write_jsonl(setup["base"] / "docs.jsonl", pa.Table.from_pylist(changed))
    assert main(setup["build"]) == 0
    assert main(["--root", root, "build", "tasks", "--spec", str(setup["base"] / "spec.yaml")]) == 0
    capsys.readouterr()
    assert main(["--root", root, "mine", "--examples", "small", "--depth", "40"]) == 0
    # The new extract is one new corpus text; the classification example shares that string.
    assert "embedded 1 new texts" in capsys.readouterr().out


def test_a_retrained_teacher_of_the_same_shape_embeds_everything_again(setup, tmp_path, capsys, perturb_in_place):
    import shutil

    from storage import PACKAGED_MINILM, resolve_packaged

    retrained = tmp_path / "minilm-retrained"
    shutil.copytree(resolve_packaged(PACKAGED_MINILM), retrained)
    perturb_in_place(retrained / "model.safetensors", {"encoder.layer.3.attention.self.query.weight"})
    capsys.readouterr()
    assert main(["--root", setup["root"], "mine", "--examples", "small", "--depth", "40", "--tasks", "desc",
                 "--teacher", str(retrained), "--name", "retrained"]) == 0
    out = capsys.readouterr().out
    embedded = int(out.split("embedded ")[1].split()[0])
    assert embedded > 0 and f"(0 of {embedded} cached)" in out  # not one stale vector reused


def test_ray_selection_equals_the_same_function_in_process(setup):
    catalog = Catalog(setup["root"])
    cfg = MineConfig(examples="small", depth=40, reuse=False)  # every query searched, none carried
    searched = search(cfg, catalog)
    import ray

    on_ray = pa.concat_tables(ray.get(select_on_ray(searched, 50, "run-x")))  # several Ray batches
    select = SelectNegatives({n: p.table for n, p in searched.pools.items()}, searched.plans, searched.teacher.label,
                             "run-x")
    in_process = select(searched.queries)
    # Each chunk lists its negatives, then rejections, then query rows: compare kind by kind.
    from pipelines.mine.write import split_selected

    assert on_ray.num_rows == in_process.num_rows > 0
    for kind in ("negative", "rejected", "query"):
        assert split_selected(on_ray, kind).equals(split_selected(in_process, kind)), kind


def test_ray_embedding_stage_equals_plain_in_process_encoding(setup):
    """The actor pool with its token-budget batches against Teacher.encode at fixed batches."""
    from miners.teacher import Teacher, cache_key

    catalog = Catalog(setup["root"])
    spec = TeacherSpec()
    resolved = resolve_teacher(spec)  # auto precision, as the mine resolved it for its CPU actors
    name = resolved.cache_name
    assert catalog.manifest("embeddings", name, "v0001").stats["max_batch_tokens"] == 2048
    texts = catalog.read_table("corpus", "small", "v0001").column("text").to_pylist()
    on_ray = EmbeddingCache(catalog, name, dim=None, config={}).load([cache_key(t) for t in texts])
    plain = Teacher(spec, device="cpu").encode(texts, batch_size=64)
    # bf16 sums depend on the padded shape of the batch, so equal only to its rounding
    assert np.allclose(on_ray, plain, atol={"fp32": 1e-5, "bf16": 5e-3}[resolved.precision])


def test_bad_inputs_give_one_line_errors(setup, tmp_path, capsys):
    root = setup["root"]
    broken = tmp_path / "broken-teacher"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert main(["--root", root, "mine", "--examples", "small", "--teacher", str(broken)]) == 2
    assert "does not load" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["--root", root, "mine", "--examples", "small", "--tasks", "nope"]) == 2
    assert "has no task 'nope'" in capsys.readouterr().err
    assert main(["--root", root, "mine", "--examples", "small", "--depth", "3"]) == 2
    assert "--depth must be at least num_negatives (7), got 3" in capsys.readouterr().err
    assert main(["--root", root, "mine", "--examples", "small", "--max-batch-tokens", "-5"]) == 2
    assert "--max-batch-tokens must be 0 (off) or positive, got -5" in capsys.readouterr().err


def test_depth_beyond_the_corpus_is_capped_and_recorded(setup):
    catalog = Catalog(setup["root"])
    assert main(["--root", setup["root"], "mine", "--examples", "small", "--tasks", "desc", "--depth", "100000",
                 "--name", "deep"]) == 0
    report = catalog.manifest("negatives", "deep").stats["report"]["desc"]
    assert report["depth"] == 120


def test_cache_of_another_dimension_is_refused(tmp_path):
    catalog = Catalog(str(tmp_path / "data"))
    spec = TeacherSpec(max_length=64)
    bogus = EmbeddingCache(catalog, resolve_teacher(spec).cache_name, dim=8, config={})

    def stage(writer):
        writer.write_table(embeddings_table(["k"], np.zeros((1, 8), np.float32)))
        return 1

    bogus.append(stage, {})
    catalog.write_table("corpus", "c", pa.table({"doc_id": ["a", "b"], "text": ["x", "y"], "content_hash": ["1", "2"]}))
    catalog.write_table("examples", "e", pa.table({
        "task": ["t"], "task_type": ["retrieval"], "example_id": ["t:1"], "instruction": [""], "query": ["q"],
        "query_hash": ["h"], "positive_ids": [["a"]], "label": pa.array([None], pa.string())}),
        config={"corpus": "c"})
    from miners.select import SelectionConfig
    from pipelines.mine import mine

    with pytest.raises(CatalogError, match="holds 8-dimensional vectors but the teacher gives 384"):
        mine(MineConfig(examples="e", teacher=spec, depth=2, selection=SelectionConfig(num_negatives=1),
                        class_selection=SelectionConfig(strategy="topk", num_negatives=1)), catalog)


def test_a_dead_encoder_actor_is_restarted_and_the_cache_is_byte_identical(setup, tmp_path):
    from miners.teacher import cache_key

    # Defined here, not at module level, so that Ray pickles it by value into the actors.
    class _DiesOnce:
        """An encoder reference whose first actor dies (os._exit: the process is gone, as after a
        SIGKILL or an OOM kill) in the middle of its second batch; later actors run normally."""

        def __init__(self, inner, marker: str):
            self.inner, self.marker = inner, marker

        def load(self, device, num_threads):
            encoder = self.inner.load(device, num_threads)
            marker, calls = self.marker, [0]

            class Encoder:
                def encode_pairs(self, *args):
                    calls[0] += 1
                    if calls[0] == 2 and not os.path.exists(marker):
                        open(marker, "w").close()
                        os._exit(1)
                    return encoder.encode_pairs(*args)

            return Encoder()

    texts = {cache_key(t): t for t in setup["corpus"].column("extract").to_pylist()}
    teacher = resolve_teacher(TeacherSpec())
    marker = str(tmp_path / "died")
    hashes = []
    for name, ref in (("calm", teacher), ("killed", _DiesOnce(teacher, marker))):
        catalog = Catalog(str(tmp_path / name))
        cache = EmbeddingCache(catalog, teacher.cache_name, dim=None, config={})
        stats = embed_missing(texts, cache, ref, batch_size=8, encode_in="actors")
        assert stats.embedded == len(texts)
        hashes.append(catalog.manifest("embeddings", teacher.cache_name).content_hash)
    assert os.path.exists(marker)  # the actor did die mid-stage
    assert hashes[0] == hashes[1]  # same bytes: no row lost, none twice


def test_the_encoder_actors_have_exited_when_the_embedding_stage_returns(tmp_path):
    """Ray Data kills a finished pool's actors asynchronously; the stage waits for them, so
    the teacher is out of memory before the mine loads vectors and searches."""
    from miners.teacher import cache_key
    from pipelines.runtime.encoding import ENCODER_TITLE
    from pipelines.runtime.local_ray import wait_for_local_exit

    teacher = resolve_teacher(TeacherSpec(precision="fp32"))
    cache = EmbeddingCache(Catalog(str(tmp_path / "root")), teacher.cache_name, dim=None, config={})
    texts = {cache_key(t): t for t in ("a cat", "a dog")}
    assert embed_missing(texts, cache, teacher, 64, encode_in="actors").embedded == 2
    assert wait_for_local_exit(ENCODER_TITLE, timeout_s=0)


def test_on_the_private_local_ray_the_driver_encodes_with_the_pools_vectors(tmp_path, caplog):
    """On the private local Ray this process started, auto encodes in the driver, not on the actor
    pool; the cache gets the same keys and (fp32) the same vectors either way."""
    import logging

    from miners.teacher import cache_key
    from pipelines.runtime.local_ray import on_private_local_ray

    assert on_private_local_ray()  # the module's Ray, started by start_local_ray

    teacher = resolve_teacher(TeacherSpec(precision="fp32"))
    texts = {cache_key(t): t for t in ("a cat sat", "a dog ran", "the stock market fell sharply today")}
    loaded = []
    for name, encode_in in (("pool", "actors"), ("driver", "auto")):
        cache = EmbeddingCache(Catalog(str(tmp_path / name)), teacher.cache_name, dim=None, config={})
        with caplog.at_level(logging.INFO, logger="quarry"):
            caplog.clear()
            assert embed_missing(texts, cache, teacher, 64, encode_in=encode_in).embedded == 3
        assert ("texts in the driver" in caplog.text) == (name == "driver"), caplog.text
        loaded.append(cache.load(list(texts)))
        assert cache.latest().num_rows == 3 and cache.dim == loaded[-1].shape[1]
    np.testing.assert_allclose(loaded[0], loaded[1], atol=1e-6)


def test_waiting_for_a_local_process_by_its_title(tmp_path):
    import subprocess
    import time

    from pipelines.runtime.local_ray import wait_for_local_exit

    short = subprocess.Popen(["bash", "-c", "exec -a ray::ShortLived sleep 1"])
    long = subprocess.Popen(["bash", "-c", "exec -a ray::LongLived sleep 30"])
    try:
        time.sleep(0.3)  # both have taken their titles
        t = time.monotonic()
        assert wait_for_local_exit("ray::ShortLived", timeout_s=10)
        assert time.monotonic() - t < 5
        assert not wait_for_local_exit("ray::LongLived", timeout_s=0.5)
        assert wait_for_local_exit("ray::NoSuchProcess", timeout_s=0)
    finally:
        short.kill(), long.kill()
        short.wait(), long.wait()
