"""Source fetching as a consumer applies it, per project: ``fetching_source`` wraps the
project's uploaded artifacts in ``events.source_fetch.FetchingArtifacts`` while the project
allows fetching (``scrapeJavaScript`` and a non-empty ``allowedDomains``, stored by
storage/projects.py), re-reading those settings every ``settings_refresh_s``. One
``SourceFetcher`` per process and configuration, so its cache serves every project.

A failed read of the settings raises ``StorageError``: the consumer retries the item, as for
any storage failure (actors/symbolicate.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from cluster.settings import Settings
from events.artifacts import Artifact, ArtifactSource
from events.source_fetch import (
    DomainPattern,
    FetchConfig,
    FetchingArtifacts,
    SourceFetcher,
    parse_domain,
)
from storage.artifacts import ConnectionFactory, shared_connection
from storage.errors import StorageError
from storage.projects import SourceFetchSettings, source_fetch_settings

log = logging.getLogger("crashray.source_fetch")

_fetchers: dict[FetchConfig, SourceFetcher] = {}
_fetchers_lock = threading.Lock()


def fetch_config(settings: Settings) -> FetchConfig:
    """The ``CRASHRAY_SOURCE_FETCH_*`` settings as the fetcher takes them."""
    return FetchConfig(
        timeout_s=settings.source_fetch_timeout_s, max_bytes=settings.source_fetch_max_bytes,
        cache_ttl_s=settings.source_fetch_cache_ttl_s,
        failure_ttl_s=settings.source_fetch_failure_ttl_s,
        cache_bytes=settings.source_fetch_cache_bytes,
        allow_private=settings.source_fetch_allow_private,
        settings_refresh_s=settings.source_fetch_settings_refresh_s)


def shared_fetcher(config: FetchConfig) -> SourceFetcher:
    """This process's fetcher for ``config`` (made on first use)."""
    with _fetchers_lock:
        found = _fetchers.get(config)
        if found is None:
            found = _fetchers[config] = SourceFetcher(config)
        return found


class ProjectFetching:
    """``ArtifactSource``: ``inner``, with fetching while the project's settings allow it."""

    def __init__(self, inner: ArtifactSource, read_settings: Callable[[], SourceFetchSettings],
                 fetcher: SourceFetcher, refresh_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self._read_settings = read_settings
        self._fetcher = fetcher
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ArtifactSource = inner
        self._read_at: float | None = None

    def current(self) -> ArtifactSource:
        """``inner`` or its ``FetchingArtifacts``, as the settings last read say."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._refresh_s:
                self._current = self._source_for(self._read_settings())
                self._read_at = now
            return self._current

    def _source_for(self, settings: SourceFetchSettings) -> ArtifactSource:
        if not settings.enabled:
            return self.inner
        patterns = _patterns(settings.allowed_domains)
        return FetchingArtifacts(self.inner, self._fetcher, patterns) if patterns \
            else self.inner

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None:
        return self.inner.by_debug_id(debug_id, kind)

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        return self.current().by_url(release, dist, url, kind)


def _patterns(domains: tuple[str, ...]) -> list[DomainPattern]:
    """The stored patterns that parse (the API validates them; one edited in the
    database by hand is skipped and logged rather than failing every event)."""
    patterns = []
    for domain in domains:
        try:
            patterns.append(parse_domain(domain))
        except ValueError as exc:
            log.warning("allowedDomains entry skipped: %s", exc)
    return patterns


def fetching_source(inner: ArtifactSource, conn_factory_or_url: ConnectionFactory | str,
                    organization_id: int, project_id: int, fetch_config: FetchConfig
                    ) -> ArtifactSource:
    """``inner`` (one project's uploads) with source fetching as the project's settings
    say, read through ``conn_factory_or_url`` (a connection factory, or a PostgreSQL URL:
    the process's shared connection to it) at most every
    ``fetch_config.settings_refresh_s``."""
    connect: ConnectionFactory = (shared_connection(conn_factory_or_url)
                                  if isinstance(conn_factory_or_url, str)
                                  else conn_factory_or_url)

    def read_settings() -> SourceFetchSettings:
        try:
            with connect() as conn:
                found = source_fetch_settings(conn, organization_id, project_id)
        except psycopg.Error as exc:
            raise StorageError(f"reading project {project_id}'s source fetching settings"
                               f" failed: {exc}") from exc
        return found or SourceFetchSettings((), False)

    return ProjectFetching(inner, read_settings, shared_fetcher(fetch_config),
                           fetch_config.settings_refresh_s)


def fetching_artifacts_for(artifacts_for: Callable[[int, int], ArtifactSource],
                           conn_factory_or_url: ConnectionFactory | str,
                           fetch_config: FetchConfig, organization_id: int, project_id: int
                           ) -> ArtifactSource:
    """A ``SymbolicationConfig.artifacts_for`` with fetching: bind the first three with
    ``functools.partial`` (all pickle when ``artifacts_for`` does and the database is
    given by URL)."""
    return fetching_source(artifacts_for(organization_id, project_id), conn_factory_or_url,
                           organization_id, project_id, fetch_config)
