"""What a build stage (``build wiki``, ``build tasks``) hands back: the version, whether it
was new, and what changed against the version before it.

Tested by tests/pipelines/builders/test_sources_ray.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import Manifest, human_bytes
from storage.changes import ChangeSummary


@dataclass
class BuildResult:
    manifest: Manifest
    unchanged: bool  # the build equalled the latest version, which stays
    changes: ChangeSummary | None = None  # against the version that was latest before the build

    def summary(self) -> str:
        m = self.manifest
        state = "unchanged, still" if self.unchanged else "committed"
        line = f"{m.kind}/{m.name}: {state} {m.version}: {m.num_rows} rows, {human_bytes(m.num_bytes)}"
        if self.unchanged or self.changes is None:
            return line
        lines = [f"{line}; {self.changes.describe()}"]
        if self.changes.previous_version is not None:
            lines += [f"  {group}: {counts.describe()}" for group, counts in sorted(self.changes.groups.items())]
        return "\n".join(lines)
