"""What symbolication reads uploaded source files through (pure, no Ray, no SQL).

The shared interface of issue 12 (notes/SOURCEMAPS.md): ``storage.artifacts.ProjectArtifacts``
implements ``ArtifactSource`` for one organization and project.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Artifact:
    url: str              # "~/app.min.js" or full URL as in the manifest
    kind: str             # "minified_source" | "source_map" | "source"
    content: bytes
    headers: Mapping[str, str]   # e.g. {"debug-id": "...", "sourcemap": "app.min.js.map"}


class ArtifactSource(Protocol):
    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None: ...
    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None: ...
