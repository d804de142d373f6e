"""The test process's own exit (tests/conftest.py): pytest's status is kept, every Python
exit handler runs, and the native teardown after them is skipped. Checked in a separate
pytest process that loads the conftest as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

SUITE = textwrap.dedent("""
    import atexit, os

    OUT = os.environ["EXIT_PROBE_DIR"]
    atexit.register(lambda: open(os.path.join(OUT, "atexit"), "w").close())


    class _Finalised:  # a module global: freed in the interpreter's own teardown only
        def __del__(self, path=os.path.join(OUT, "teardown"), open=open):  # bound now: globals go first
            open(path, "w").close()


    KEPT = _Finalised()


    def test_one():
        assert os.environ["EXIT_PROBE_PASS"] == "1"
""")


@pytest.mark.integration
@pytest.mark.parametrize("passes, native, status, teardown", [
    ("1", "0", 0, False),  # passes: status 0, exit handlers ran, no native teardown
    ("0", "0", 1, False),  # a failing test still fails the run
    ("1", "1", 0, True),  # QUARRY_TEST_NATIVE_EXIT=1: the interpreter's usual teardown
])
def test_the_test_process_keeps_pytests_status_and_runs_its_exit_handlers(tmp_path, passes, native, status, teardown):
    (tmp_path / "test_probe.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": TESTS, "EXIT_PROBE_DIR": str(tmp_path), "EXIT_PROBE_PASS": passes,
           "QUARRY_TEST_NATIVE_EXIT": native}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == status, done.stdout + done.stderr
    assert ("1 passed" if passes == "1" else "1 failed") in done.stdout
    assert (tmp_path / "atexit").exists()
    assert (tmp_path / "teardown").exists() == teardown
    assert ("native teardown skipped" in done.stdout) == (not teardown)  # the summary says when it is skipped
