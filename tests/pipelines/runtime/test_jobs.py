"""The job-submission layer without a cluster: the entrypoint, the root rules, messages."""

import pytest

from pipelines.cli import main
from pipelines.runtime.jobs import REPO_ROOT, SubmitConfig, first_message_line, parse_env
from storage import QuarryError


def test_entrypoint_quotes_the_command_and_carries_the_root():
    cfg = SubmitConfig(command=("query", "select * from corpus limit 1"), root="s3://bucket/q")
    assert cfg.entrypoint == "python -m pipelines.cli --root s3://bucket/q query 'select * from corpus limit 1'"
    assert cfg.runtime_env == {"working_dir": REPO_ROOT, "env_vars": {}}


@pytest.mark.parametrize("kwargs, message", [
    ({"command": (), "root": "/shared/q"}, "give the quarry command after --"),
    ({"command": ("jobs",), "root": "/shared/q"}, "'jobs' cannot run as a job"),
    ({"command": ("mine",), "root": "quarry-data"}, "--root 'quarry-data' is relative"),
    ({"command": ("mine",), "root": "/shared/q", "working_dir": "/"}, "is not a Quarry checkout"),
])
def test_bad_submissions_are_refused(kwargs, message):
    with pytest.raises(QuarryError, match=message):
        SubmitConfig(**kwargs)


def test_env_pairs():
    assert parse_env(["HF_HUB_OFFLINE=1", "A=b=c"]) == (("HF_HUB_OFFLINE", "1"), ("A", "b=c"))
    with pytest.raises(QuarryError, match="bad --env 'NOPE'"):
        parse_env(["NOPE"])


def test_ray_failure_message_drops_the_log_copy():
    msg = "Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\nerror: x"
    assert first_message_line(msg) == "Job entrypoint command failed with exit code 2"
    assert first_message_line(None) == ""


def test_cli_refuses_a_submit_without_a_root(monkeypatch, capsys):
    monkeypatch.delenv("QUARRY_HOME", raising=False)
    assert main(["submit", "--", "mine"]) == 2
    assert "quarry submit needs a data root every node of the cluster reaches" in capsys.readouterr().err
    assert main(["jobs", "logs"]) == 2
    assert "quarry jobs logs needs a job id" in capsys.readouterr().err
