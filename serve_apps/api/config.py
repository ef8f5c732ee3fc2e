"""The API deployment's settings (taken from cluster/settings.py by cluster/runtime.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from events.grouping import DEFAULT_GROUPING_CONFIG
from events.quotas import SpikeProtection
from storage.artifacts import ArtifactConfig
from storage.retention import Horizons


@dataclass(frozen=True)
class ApiConfig:
    postgres_url: str
    clickhouse_dsn: str
    #: Where SDKs reach this instance: the DSNs' scheme, host and port.
    base_url: str
    #: Most items one page of a list answers (``limit`` is capped at it).
    max_page_size: int
    #: Seconds the previous grouping version keeps matching after a version change.
    grouping_transition_s: float = 30 * 86_400.0
    #: Browser sessions and the login rate limit (see cluster/settings.py).
    session_lifetime_s: float = 14 * 86_400.0
    login_max_failures: int = 5
    login_window_s: float = 300.0
    login_max_delay_s: float = 60.0
    spike_defaults: SpikeProtection = field(default_factory=SpikeProtection)
    #: PostgreSQL connections per API replica.
    pool_max_connections: int = 4
    #: The grouping version new projects start with (the newest).
    default_grouping_config: str = DEFAULT_GROUPING_CONFIG
    #: Largest request body a route reads (serve_apps/api/body_limit.py).
    max_body_bytes: int = 1024 * 1024
    #: Longest issue comment, in characters (``CRASHRAY_API_NOTE_MAX_CHARS``).
    note_max_chars: int = 8_192
    #: Proxies whose X-Forwarded-For entries are believed (events/proxies.py).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    #: Uploaded source files: their directory and the upload limits (storage/artifacts.py).
    artifacts: ArtifactConfig = field(default_factory=ArtifactConfig)
    #: Consecutive failed attempts after which a destination shows as a project warning
    #: (``CRASHRAY_NOTIFY_FAILURE_WARNING_THRESHOLD``).
    notify_warning_threshold: int = 3
    #: The operator page's instance figures (serve_apps/api/operations.py): seconds a
    #: replica reuses them, seconds each part may take, seconds of counters behind a rate,
    #: and the queue's waiting items counted at most (CRASHRAY_OPERATOR_*).
    operator_cache_s: float = 2.0
    operator_timeout_s: float = 3.0
    operator_rate_window_s: float = 60.0
    operator_queue_count_cap: int = 100_000
    #: The storage figures of the operator page (storage/sizes.py): the retention horizons
    #: they report against, and seconds a replica reuses them (they count rows).
    retention: Horizons = field(default_factory=Horizons)
    operator_storage_cache_s: float = 60.0
