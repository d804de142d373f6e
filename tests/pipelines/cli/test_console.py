import logging

from pipelines.cli import console
from storage import InputError


def test_the_traceback_of_an_unexpected_error_goes_to_a_file_and_one_line_to_the_terminal(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setenv("QUARRY_LOG_DIR", str(tmp_path))
    try:
        {}["missing"]
    except KeyError as e:
        assert console.report_unexpected("build wiki", e, ["build", "wiki"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    (log,) = tmp_path.iterdir()
    assert log.name.startswith("quarry-build-wiki-") and str(log) in line
    assert line.startswith("error: quarry build wiki failed unexpectedly: KeyError: 'missing'")
    assert log.read_text().startswith("quarry build wiki\n") and "Traceback" in log.read_text()


def test_the_root_cause_is_the_first_quarry_error_inside_the_wrappers():
    inner = InputError("f.jsonl:2: bad")
    try:
        try:
            raise inner
        except InputError as e:
            raise RuntimeError("wrapper") from e
    except RuntimeError as outer:
        assert console.root_cause(outer) is inner


def test_library_chatter_is_left_out_unless_verbose(monkeypatch):
    for name in ("QUARRY_QUIET_RAY_DATA", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    logging.getLogger("transformers").setLevel(logging.NOTSET)
    console.configure_logging(verbose=True)
    assert logging.getLogger("transformers").level == logging.NOTSET
    console.configure_logging()
    assert logging.getLogger("transformers").level == logging.WARNING
