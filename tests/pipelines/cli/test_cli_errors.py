"""Bad input through the real CLI: one line naming the flag, file or field, exit 2, nothing written.

No Ray here: every case below is refused before any stage starts.
"""

import os

import pytest

from pipelines import cli
from pipelines.cli import data, main
from pipelines.cli.mining import mine_config

TINY_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "train", "tiny-decoder.yaml")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "texts.txt").write_text("a text\n")
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "latin1.yaml").write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "lr.yaml").write_text('lr: "x"\n')
    (tmp_path / "gpu.yaml").write_text('use_gpu: "false"\n')
    return tmp_path


CASES = [
    (["encode", "--model", "/no/such/dir", "--input", "{f}/texts.txt", "--out", "{f}/out.parquet"],
     "error: model '/no/such/dir': no such folder"),
    (["encode", "--model", "{f}", "--input", "{f}/texts.txt", "--out", "{f}/out.parquet"],
     "error: model '{f}' does not load: "),
    (["encode", "--model", "/no/such/dir", "--input", "{f}/texts.txt", "--out", "{f}/out.parquet", "--batch-size",
      "0"], "error: --batch-size must be at least 1, got 0"),
    (["encode", "--model", "m", "--input", "{f}/texts.txt", "--out", "/no/such/dir/out.parquet"],
     "error: --out /no/such/dir/out.parquet: no such folder /no/such/dir"),
    (["export-model", "/no/such/dir", "{f}/new"], "error: model '/no/such/dir': no such folder"),
    (["export-model", "{f}", "{f}/new"], "error: model '{f}' does not load: "),
    (["export-model", "{f}", "{f}"], "error: {f} exists: give a new folder for the converted model"),
    (["export-model", "{f}", "{f}/new", "--texts", "{f}/none.txt"], "error: --texts {f}/none.txt: "),
    (["export-model", "{f}", "{f}/new", "--texts", "{f}/empty.txt"], "error: --texts {f}/empty.txt: no text"),
    (["margins", "--step", "0"], "error: --step must be positive, got 0.0"),
    (["margins", "--from", "0.99", "--to", "0.9"], "error: --to must be at least the first margin (0.99), got 0.9"),
    (["margins", "--from", "0.5", "--to", "1.5"], "error: --to must be a margin topk_perc_pos takes (margin of topk_perc_pos must be a fraction in (0, 1], got 1.5)"),
    (["margins", "--negatives", "nope"], "error: no negatives dataset named 'nope'"),
    (["mine", "--index", "ivf", "--nlist", "-3"], "error: --nlist must be at least 1, got -3"),
    (["mine", "--nprobe", "0"], "error: --nprobe must be at least 1, got 0"),
    (["mine", "--index", "ivf", "--train-per-list", "8"], "error: --train-per-list must be at least 39"),
    (["mine", "--strategy", "topk", "--margin", "0.5"], "error: --margin is not taken by strategy topk, got 0.5"),
    (["mine", "--class-strategy", "topk_perc_pos", "--class-margin", "2"],
     "error: --class-margin of topk_perc_pos must be a fraction in (0, 1], got 2.0"),
    (["mine", "--max-length", "0"], "error: --max-length must be at least 1, got 0"),
    (["mine", "--depth", "3"], "error: --depth must be at least num_negatives (7), got 3"),
    (["mine", "--encoders", "0"], "error: --encoders must be at least 1, got 0"),
    (["build", "wiki", "--passage-tokens", "64", "--tokenizer", "/no/such/tokenizer"],
     "error: --tokenizer '/no/such/tokenizer': no such folder"),
    (["build", "wiki", "--passage-tokens", "64", "--tokenizer", "{f}"], "error: --tokenizer '{f}' does not load: "),
    (["build", "wiki", "--passage-tokens", "64"], "error: --passage-tokens needs a tokenizer"),
    (["build", "wiki", "--name", "abc\n"], "error: invalid dataset name 'abc\\n'"),
    (["build", "tasks", "--limit", "0"], "error: --limit must be positive, got 0"),
    (["run", "--limit", "0"], "error: --limit must be positive, got 0"),
    (["train", "--config", TINY_CONFIG, "--stop-after", "-1"], "error: --stop-after must be at least 1, got -1"),
    (["train", "--config", TINY_CONFIG, "--stop-after", "0"], "error: --stop-after must be at least 1, got 0"),
    (["train", "--config", "{f}/latin1.yaml"], "error: {f}/latin1.yaml: not UTF-8 text (at byte offset 13)"),
    (["train", "--config", "{f}/lr.yaml"], "error: lr.yaml: lr: expected a number, got 'x'"),
    (["train", "--config", "{f}/gpu.yaml"], "error: gpu.yaml: use_gpu: expected true or false, got 'false'"),
    (["export", "--global-batch", "3"], "error: --global-batch must be a positive multiple of workers (2), got 3"),
    (["query", "explain analyze create table t as select 1"],
     "error: quarry query is read-only: EXPLAIN is allowed only of a SELECT, not of a CREATE statement"),
    (["query", "explain analyze drop view catalog"],
     "error: quarry query is read-only: EXPLAIN is allowed only of a SELECT, not of a DROP statement"),
    (["show", "corpus", "nope"], "error: no corpus dataset named 'nope'"),
]


@pytest.mark.parametrize("argv, expected", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_writes_nothing(files, capsys, argv, expected):
    root = files / "root"
    argv = [a.replace("{f}", str(files)) for a in argv]
    assert main(["--root", str(root), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected.replace("{f}", str(files))), err
    assert not root.exists()
    assert not (files / "out.parquet").exists() and not (files / "new").exists()


def test_an_unexpected_error_is_one_line_with_the_traceback_in_a_log(files, capsys, monkeypatch):
    def broken(args, catalog):
        {}["no such key"]

    monkeypatch.setenv("QUARRY_LOG_DIR", str(files / "logs"))
    monkeypatch.setattr(data, "cmd_datasets", broken)
    assert main(["--root", str(files / "root"), "datasets"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: quarry datasets failed unexpectedly: KeyError: 'no such key' (traceback in ")
    (log,) = (files / "logs").iterdir()
    assert str(log) in line and "Traceback" in log.read_text() and "{}[\"no such key\"]" in log.read_text()
    with pytest.raises(KeyError):
        main(["--root", str(files / "root"), "-v", "datasets"])


def test_class_tasks_keep_their_own_strategy_and_take_their_own_margin():
    from pipelines.mine.config import describe_selection, plan_task

    args = cli.build_parser().parse_args(["mine", "--strategy", "topk_margin_pos", "--margin", "0.1"])
    cfg = mine_config(args)
    assert (cfg.selection.strategy, cfg.selection.margin) == ("topk_margin_pos", 0.1)
    assert (cfg.class_selection.strategy, cfg.class_selection.margin) == ("topk", None)
    plans = {t: plan_task(cfg, t, ty) for t, ty in (("r", "retrieval"), ("c", "classification"))}
    assert describe_selection(plans) == ("retrieval tasks topk_margin_pos (margin 0.1) where a positive ranks in the "
                                         "first 1; classification/clustering "
                                         "tasks topk; the same-class filter removes their false negatives; "
                                         "7 per query, top sampling")
    args = cli.build_parser().parse_args(["mine", "--class-strategy", "topk_abs", "--class-margin", "0.5"])
    assert mine_config(args).class_selection.effective_margin == 0.5
    assert not mine_config(args).class_selection.conditioned_on_confidence  # a retrieval-only rule
    args = cli.build_parser().parse_args(["mine", "--confident-within", "0"])
    assert mine_config(args).selection.confident_within is None  # 0: the threshold on every query


def test_argparse_defaults_are_the_config_defaults():
    from miners.select import SelectionConfig
    from pipelines.mine.config import MineConfig
    from pipelines.train.export import ExportConfig

    mine = mine_config(cli.build_parser().parse_args(["mine"]))
    assert mine == MineConfig()
    args = cli.build_parser().parse_args(["export"])
    assert (args.global_batch, args.workers, args.num_negatives, args.seed, args.stage) == (
        ExportConfig.global_batch, ExportConfig.workers, ExportConfig.num_negatives, ExportConfig.seed,
        ExportConfig.training_stage)
    assert mine.class_selection == SelectionConfig(strategy="topk", confident_within=None)


def test_an_input_error_wrapped_by_ray_is_shown_as_itself():
    """Ray raises "RayTaskError(InputError)", an InputError whose message is Ray's header."""
    from ray.exceptions import RayTaskError

    from storage import InputError

    error = InputError("f.jsonl:2: field 't' must be a string, got int")
    wrapped = RayTaskError("ray::MapBatches(parse_jsonl_batch)", "Traceback ...", error).as_instanceof_cause()
    assert isinstance(wrapped, InputError) and not str(wrapped).startswith(str(error))  # Ray's header instead
    assert cli.root_cause(wrapped) is error
    assert cli.root_cause(RuntimeError("outer")).args == ("outer",)


def test_encode_in_is_checked_where_the_configs_are_built():
    from pipelines.evaluate import EvalConfig
    from pipelines.mine.config import MineConfig
    from storage import InputError

    for build in (lambda: MineConfig(encode_in="gpu"), lambda: EvalConfig(models=["m"], encode_in="gpu")):
        with pytest.raises(InputError, match="encode_in must be one of auto, driver, actors, got 'gpu'"):
            build()
    assert MineConfig(encode_in="actors").encode_in == EvalConfig(models=["m"], encode_in="actors").encode_in
