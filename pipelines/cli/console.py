"""What a person sees in the terminal: Quarry's log lines, library chatter left out, and a
failure said in one line (with the traceback kept in a file).

Errors Quarry raises on purpose print one line and exit with 2; anything else prints one
line naming the command and the exception, writes the traceback to a log file and exits
with 1; ``-v`` shows tracebacks instead. Also used by benchmarks that run stages in
their own process. Tested by ``tests/pipelines/cli/test_console.py``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import tempfile
import traceback
from typing import Sequence

from storage import QuarryError, first_line

QUARRY_PACKAGES = ("storage", "miners", "trainers", "evaluation", "pipelines")


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Quarry's own lines on stderr (``quarry: ...``); library chatter only with ``verbose``."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="quarry: %(message)s",
                        stream=sys.stderr)
    for noisy in ("faiss", "faiss.loader", "matplotlib", "matplotlib.font_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huggingface_hub prints its warnings (retries, for one) through its own handler: once is enough.
    logging.getLogger("huggingface_hub").propagate = False
    if not verbose:
        # Ray Data logs every failed task's traceback; the one-line error says it all.
        os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
        quiet_libraries()


def quiet_libraries() -> None:
    """The terminal is for a person: stage headers, progress bars and summaries. Library
    chatter (load reports, weight-loading bars, FutureWarnings, mteb's per-step log, the
    Ray workers' own output such as the PlacementGroupCleaner's "State API may be
    temporarily unavailable") is left out; ``-v`` brings it all back. Environment variables
    reach the processes of a local Ray, which inherit the driver's environment."""
    import warnings

    os.environ.setdefault("QUARRY_RAY_LOG_TO_DRIVER", "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars (Ray Data keeps its own)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for noisy in ("mteb", "datasets", "sentence_transformers", "transformers", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def root_cause(exc: BaseException) -> BaseException:
    """The error inside Ray's wrappers (RayTaskError keeps it as ``cause``): a Quarry error
    as soon as one is found, else the innermost."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        # Ray wraps an error raised in a task in a class deriving from both RayTaskError and
        # the error's own class ("RayTaskError(InputError)", module ray.exceptions), whose
        # message is Ray's header: only Quarry's own classes carry the one-line message.
        if isinstance(exc, QuarryError) and type(exc).__module__.split(".")[0] in QUARRY_PACKAGES:
            return exc
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def write_traceback(command: str, exc: BaseException, argv: Sequence[str]) -> str:
    """The traceback of an unexpected error, in ``$QUARRY_LOG_DIR`` (default <tmp>/quarry-logs)."""
    folder = os.environ.get("QUARRY_LOG_DIR") or os.path.join(tempfile.gettempdir(), "quarry-logs")
    os.makedirs(folder, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(folder, f"quarry-{command}-{stamp}-{os.getpid()}.log")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"quarry {' '.join(argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


def report_unexpected(command: str, exc: BaseException, argv: Sequence[str]) -> int:
    """One line for a failure Quarry did not raise on purpose; the traceback goes to a file."""
    cause = root_cause(exc)
    path = write_traceback(command.replace(" ", "-"), exc, argv)
    detail = f": {first_line(cause)}" if str(cause).strip() else ""
    print(f"error: quarry {command} failed unexpectedly: {type(cause).__name__}{detail} "
          f"(traceback in {path}; -v prints it)", file=sys.stderr)
    return 1
