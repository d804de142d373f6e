"""``quarry refresh``: rebuild datasets from the sources and specs their manifests recorded.

    quarry refresh [--only corpus/NAME] [--only examples/NAME]

1. every corpus, from the source its latest version was built from (the embedded package,
   Hugging Face, or files) with the same options: ``build_wiki`` again;
2. every examples dataset built on a refreshed corpus, from the task spec its manifest
   recorded: ``build_tasks`` again, against the corpus's new latest version.

Each build recognises unchanged input ("unchanged, still v0002") and records what changed
against the version before it (``storage.changes``): the summary is printed, kept in the
new manifest and shown by ``quarry query "select * from changes"``. A split is a function
of the example id alone (``pipelines.builders.task_rows.assign_split``), so a refresh never moves an
example from one split to another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipelines.builders import corpus as corpus_builder
from pipelines.builders import tasks as task_builder
from pipelines.builders.corpus import WikiBuildConfig
from pipelines.builders.result import BuildResult
from pipelines.builders.task_spec import spec_from_dict
from storage import Catalog, ConfigError, InputError, Manifest, validate_name

log = logging.getLogger("quarry")

REFRESHABLE = ("corpus", "examples")


@dataclass(frozen=True)
class RefreshConfig:
    only: tuple[str, ...] = ()  # "corpus/NAME" or "examples/NAME"; empty: every dataset

    def __post_init__(self) -> None:
        for item in self.only:
            try:
                parse_only(item)
            except InputError as e:
                raise ConfigError("only", str(e)) from None


def parse_only(item: str) -> tuple[str, str]:
    kind, _, name = item.partition("/")
    if kind not in REFRESHABLE or not name:
        raise InputError(f"{item!r}: expected corpus/NAME or examples/NAME")
    return kind, validate_name(name)


@dataclass
class RefreshPlan:
    corpora: list[Manifest] = field(default_factory=list)
    examples: list[Manifest] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)  # datasets no quarry builder made: why


@dataclass
class RefreshResult:
    builds: list[BuildResult]
    left_alone: list[str]

    def summary(self) -> str:
        lines = [b.summary() for b in self.builds] + [f"left as is: {why}" for why in self.left_alone]
        new = sum(not b.unchanged for b in self.builds)
        lines.append(f"refresh: {len(self.builds)} dataset(s) rebuilt, {new} new version(s), "
                     f"{len(self.builds) - new} unchanged")
        return "\n".join(lines)


def built_on(examples: Manifest) -> set[str]:
    """The corpora an examples version reads: the one its positives point into, and every
    task source that is a corpus."""
    recorded = examples.config.get("spec")
    names = {t.source.corpus for t in spec_from_dict(recorded).tasks if t.source.corpus} if recorded else set()
    if examples.config.get("corpus"):
        names.add(examples.config["corpus"])
    return names


def plan_refresh(catalog: Catalog, cfg: RefreshConfig) -> RefreshPlan:
    """Which datasets to rebuild, corpora first (the examples read their new versions)."""
    plan = RefreshPlan()
    wanted = [parse_only(item) for item in cfg.only]
    for kind, name in wanted:
        if not catalog.exists(kind, name):
            raise InputError(f"--only {kind}/{name}: no such dataset in {catalog.root.uri} (see `quarry datasets`)")
    corpus_names = [n for k, n in wanted if k == "corpus"] if wanted else catalog.names("corpus")
    plan.corpora = _built_by(catalog, "corpus", corpus_names, corpus_builder.BUILT_BY, "source", plan.left_alone)
    refreshed = {m.name for m in plan.corpora}
    example_names = [n for k, n in wanted if k == "examples"]
    if not wanted:
        example_names = catalog.names("examples")
    elif refreshed:
        example_names += [n for n in catalog.names("examples")
                          if n not in example_names and built_on(catalog.manifest("examples", n)) & refreshed]
    plan.examples = _built_by(catalog, "examples", example_names, task_builder.BUILT_BY, "spec", plan.left_alone)
    return plan


def _built_by(catalog: Catalog, kind: str, names: list[str], builder: str, recorded: str,
              left_alone: list[str]) -> list[Manifest]:
    """The latest manifests of ``names`` that ``builder`` made; the others, with why, go to
    ``left_alone``."""
    out = []
    for name in names:
        m = catalog.manifest(kind, name)
        if m.config.get("built_by") == builder:
            out.append(m)
        else:
            left_alone.append(f"{kind}/{name} {m.version}: not built by `{builder}`, no {recorded} to rebuild it from")
    return out


def refresh(cfg: RefreshConfig, catalog: Catalog) -> RefreshResult:
    plan = plan_refresh(catalog, cfg)
    if not plan.corpora and not plan.examples:
        raise InputError(f"nothing to refresh in {catalog.root.uri}: no corpus or examples dataset built by quarry "
                         "(build one with `quarry build wiki` and `quarry build tasks`)")
    builds = []
    for m in plan.corpora:
        build_cfg = WikiBuildConfig.from_manifest(m.config)
        log.info("refresh: corpus/%s from its %s source, as %s was built", m.name, build_cfg.source.kind, m.version)
        builds.append(corpus_builder.build_wiki(build_cfg, catalog))
    for m in plan.examples:
        spec = spec_from_dict(m.config["spec"])
        log.info("refresh: examples/%s from the spec %s recorded (%d tasks)", m.name, m.version, len(spec.tasks))
        builds.append(task_builder.build_tasks(spec, catalog, limit=m.config.get("limit")))
    return RefreshResult(builds=builds, left_alone=plan.left_alone)
