"""Data roots the integration tests share: built through the real CLI."""

from pipelines.cli import main


def vital_root(tmp_path_factory, name: str, limit: int = 300) -> str:
    """A root holding the first ``limit`` embedded articles and the vital tasks built on them."""
    root = str(tmp_path_factory.mktemp(name) / "data")
    assert main(["--root", root, "build", "wiki", "--limit", str(limit)]) == 0
    assert main(["--root", root, "build", "tasks", "--limit", str(limit)]) == 0
    return root
