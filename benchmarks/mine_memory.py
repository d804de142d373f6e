"""Where a cold mine's memory goes: every process of the run, by role, over time.

    python benchmarks/mine_memory.py [--limit N] [--precision auto] [--langs en,fr] [--fresh-process]

Builds the embedded vital corpus and its desc2article task (as
benchmarks/mine_vs_sentence_transformers.py does; ``--langs en,fr`` builds it from the
English and French articles together, 2x the English corpus, through a JSONL files
source), then mines it cold, with a sampler
thread reading every process of the run every 0.2 s: this driver and each process under
it (Ray's GCS, raylet, agents, and its workers, named by their process title:
``ray::EncoderActor``, ``ray::MapWorker(...)``, ``ray::IDLE`` and so on).

It reports two sums, because they differ on Ray:
- RSS, what `ps` and psutil's ``memory_info().rss`` show and what earlier figures summed.
  Pages a process shares with others count once in each, and Ray's object store is a
  shared-memory file every worker maps, so the sum over a Ray run counts those pages
  several times.
- PSS (proportional set size, from /proc/<pid>/smaps_rollup): each shared page divided
  among the processes that map it. Summed over processes it is the memory the run takes.

With ``--fresh-process`` the mine runs as ``quarry mine`` does, in a new Python process
with its own local Ray, started after the builds have run in this one and their Ray has
been shut down; the sampler follows that process and everything under it. Without it,
the builds and the mine share this process and its Ray, as ``quarry run`` does, and the
mine finds the workers the builds left.

Prints, per role, the peak of each and both at the moment the whole tree peaked, and the
stage that was running (from the log) at that moment. A benchmark, not a test: record the
figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QUARRY_PROGRESS", "0")

import psutil  # noqa: E402
from mine_vs_sentence_transformers import build_inputs  # noqa: E402

from miners.select import SelectionConfig  # noqa: E402
from miners.teacher import TeacherSpec  # noqa: E402
from pipelines.builders.sources import SourceConfig, load_embedded_table  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.runtime.local_ray import ensure_ray  # noqa: E402
from storage import Catalog  # noqa: E402

GIB = 2 ** 30


def role(proc: psutil.Process, driver_pid: int, mine_pid: int | None = None) -> str:
    """What a process is, from its title: Ray workers rename themselves ``ray::<what>``."""
    if proc.pid == driver_pid:
        return "driver (this process)"
    if proc.pid == mine_pid:
        return "driver (the mine's own process)"
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "gone"
    title = " ".join(cmd)
    if title.startswith("ray::"):
        name = title.split()[0][5:]
        # Ray Data names its task workers after the operators they run; keep the kind only.
        return "ray::" + name.split("(")[0]
    for marker, name in (("gcs_server", "gcs_server"), ("raylet", "raylet"), ("dashboard/agent", "dashboard agent"),
                         ("dashboard/dashboard.py", "dashboard head"), ("autoscaler/_private/monitor", "autoscaler monitor"),
                         ("runtime_env/agent", "runtime-env agent"), ("log_monitor", "log monitor"),
                         ("default_worker.py", "ray worker (no task yet)")):
        if marker in title:
            return name
    return os.path.basename(cmd[0]) if cmd else "?"


class Sampler:
    """Samples RSS and PSS of the driver and all its descendants until stopped."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.stop_event = interval, threading.Event()
        self.peak_rss: dict[str, int] = defaultdict(int)
        self.peak_pss: dict[str, int] = defaultdict(int)
        self.total_peak_pss, self.total_peak_rss = 0, 0
        self.at_peak: dict[str, tuple[int, int]] = {}
        self.stage_at_peak = ""
        self.stage = "start"
        self.mine_pid: int | None = None  # with --fresh-process: the child that mines
        self.stage_file: str | None = None  # ... and the log it writes, whose last line is the stage
        self.mine_peak_pss = 0  # with --fresh-process: the peak of the mine's own tree (this process left out)

    def sample(self) -> None:
        me = psutil.Process()
        by_role_rss: dict[str, int] = defaultdict(int)
        by_role_pss: dict[str, int] = defaultdict(int)
        for p in [me] + me.children(recursive=True):
            try:
                full = p.memory_full_info()  # reads smaps_rollup: rss, pss, uss
            except psutil.Error:
                continue
            r = role(p, me.pid, self.mine_pid)
            by_role_rss[r] += full.rss
            by_role_pss[r] += full.pss
        for r in by_role_rss:
            self.peak_rss[r] = max(self.peak_rss[r], by_role_rss[r])
            self.peak_pss[r] = max(self.peak_pss[r], by_role_pss[r])
        total_pss, total_rss = sum(by_role_pss.values()), sum(by_role_rss.values())
        self.mine_peak_pss = max(self.mine_peak_pss, total_pss - by_role_pss.get(role(me, me.pid), 0))
        self.total_peak_rss = max(self.total_peak_rss, total_rss)
        if total_pss > self.total_peak_pss:
            self.total_peak_pss = total_pss
            self.at_peak = {r: (by_role_rss[r], by_role_pss[r]) for r in by_role_rss}
            self.stage_at_peak = self.stage

    def run(self) -> None:
        while not self.stop_event.is_set():
            if self.stage_file and os.path.exists(self.stage_file):
                with open(self.stage_file, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
                self.stage = lines[-1][:90] if lines else self.stage
            self.sample()
            time.sleep(self.interval)

    def __enter__(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()


class StageFromLog(logging.Handler):
    """Keeps the sampler told which step of the mine is running (the quarry log's last line)."""

    def __init__(self, sampler: Sampler):
        super().__init__()
        self.sampler = sampler

    def emit(self, record: logging.LogRecord) -> None:
        self.sampler.stage = record.getMessage()[:90]


def source(langs: list[str], limit: int | None, root: str) -> SourceConfig:
    """The embedded articles of one language, or of several as one JSONL file."""
    if len(langs) == 1:
        return SourceConfig(lang=langs[0], limit=limit)
    path = os.path.join(root, "articles.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for lang in langs:
            for r in load_embedded_table(lang, limit).to_pylist():
                f.write(json.dumps({"title": f"{r['title']} ({lang})", "text": r["extract"],
                                    "description": r["description"], "topic": r["topic"]}) + "\n")
    return SourceConfig(kind="files", paths=[path], columns={"description": "description", "topic": "topic"})


# The mine in a fresh process (--fresh-process): (config, data root, log, output) in.
CHILD = """
import logging, os, pickle, sys, time
sys.path.insert(0, {repo!r})
from pipelines.mine import mine
from pipelines.runtime.local_ray import ensure_ray
from storage import Catalog
cfg, root, log, out = pickle.load(open(sys.argv[1], "rb"))
handler = logging.FileHandler(log)
logging.getLogger("quarry").addHandler(handler)
logging.getLogger("quarry").setLevel(logging.INFO)
start = time.perf_counter()
result = mine(cfg, Catalog(root))
pickle.dump((time.perf_counter() - start, result), open(out, "wb"))
"""


def mine_in_fresh_process(cfg: MineConfig, catalog: Catalog, sampler: Sampler):
    """``mine(cfg, catalog)`` in a new interpreter that starts its own Ray, as ``quarry mine``
    does; returns (its seconds, its MineResult). Ray's start-up is in the seconds here."""
    import pickle
    import subprocess

    import ray

    ray.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        args, log, out = (os.path.join(tmp, n) for n in ("args.pkl", "mine.log", "out.pkl"))
        with open(args, "wb") as f:
            pickle.dump((cfg, catalog.root.uri, log, out), f)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=repo), args])
        sampler.mine_pid, sampler.stage_file = child.pid, log
        if child.wait() != 0:
            sys.exit(f"the mine's process failed with exit status {child.returncode}")
        sampler.stage_file = None
        with open(out, "rb") as f:
            return pickle.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="first N articles only (quick check)")
    parser.add_argument("--precision", default="auto", help="teacher precision (default %(default)s)")
    parser.add_argument("--langs", default="en", help="embedded languages in the corpus (default %(default)s)")
    parser.add_argument("--fresh-process", action="store_true",
                        help="mine in a new process with its own Ray, as quarry mine does (default: in this one)")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="quarry-mine-memory-")
    catalog = Catalog(root)
    build_inputs(catalog, args.limit, source(args.langs.split(","), args.limit, root))
    if not args.fresh_process:
        ensure_ray()
    cfg = MineConfig(examples="bench", depth=50, teacher=TeacherSpec(precision=args.precision),
                     selection=SelectionConfig(strategy="topk_perc_pos", margin=0.95, num_negatives=5, confident_within=None),
                     class_selection=SelectionConfig(strategy="topk", num_negatives=5))
    with Sampler() as sampler:
        if args.fresh_process:
            seconds, result = mine_in_fresh_process(cfg, catalog, sampler)
        else:
            handler = StageFromLog(sampler)
            logging.getLogger("quarry").addHandler(handler)
            logging.getLogger("quarry").setLevel(logging.INFO)
            t = time.perf_counter()
            result = mine(cfg, catalog)
            seconds = time.perf_counter() - t
            logging.getLogger("quarry").removeHandler(handler)

    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / GIB:.0f} GiB, "
          f"Python {platform.python_version()}")
    corpus_rows = catalog.manifest("corpus", "bench").num_rows
    where = "in a fresh process (quarry mine)" if args.fresh_process else "in the builds' process (quarry run)"
    print(f"cold mine of {corpus_rows} documents ({args.langs}) {where}: {seconds:.1f} s, "
          f"{result.embed_stats.summary()}, teacher at {result.precision}")
    print(f"whole run, peak: PSS {sampler.total_peak_pss / GIB:.2f} GiB, RSS summed {sampler.total_peak_rss / GIB:.2f} GiB")
    if args.fresh_process:
        print(f"the mine's process and its Ray alone (this process left out), peak PSS "
              f"{sampler.mine_peak_pss / GIB:.2f} GiB")
    print(f"PSS peaked during: {sampler.stage_at_peak}")
    print(f"{'process role':34} {'peak RSS':>9} {'peak PSS':>9} {'RSS @peak':>10} {'PSS @peak':>10}")
    for r in sorted(sampler.peak_pss, key=lambda r: -sampler.peak_pss[r]):
        rss_at, pss_at = sampler.at_peak.get(r, (0, 0))
        print(f"{r:34} {sampler.peak_rss[r] / GIB:9.3f} {sampler.peak_pss[r] / GIB:9.3f} "
              f"{rss_at / GIB:10.3f} {pss_at / GIB:10.3f}")


if __name__ == "__main__":
    main()
