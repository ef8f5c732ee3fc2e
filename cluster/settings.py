"""Every Crashray setting, in one place.

Each key is read from a ``CRASHRAY_<KEY>`` environment variable (or ``crashray up`` flags)
and says its unit and why it defaults as it does. Size limits default to Relay's
(relay-config/src/config.rs ``Limits::default``) so SDKs see the same behaviour as Sentry's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from storage.kafka import KafkaSettings

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MB = 1000 * 1000

#: Relay's defaults (spec §3.2).
RELAY_MAX_REQUEST_BYTES = 20 * MB
RELAY_MAX_ENVELOPE_BYTES = 100 * MB
RELAY_MAX_EVENT_BYTES = 1 * MIB
RELAY_MAX_ATTACHMENT_BYTES = 100 * MB
RELAY_MAX_SESSION_ITEMS = 100
RELAY_MAX_CLIENT_REPORT_BYTES = 4 * KIB


class Settings(BaseSettings):
    """Crashray's configuration; environment variables ``CRASHRAY_*`` override defaults."""

    model_config = SettingsConfigDict(env_prefix="CRASHRAY_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    #: Directory for the embedded ClickHouse data, the private PostgreSQL and Ray's temp
    #: files. Everything Crashray writes on a laptop stays below it.
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".crashray")
    #: Address the HTTP endpoints (SDK ingest, API, dashboard) listen on. Loopback by
    #: default: an embedded instance is for this machine until the operator opens it.
    host: str = "127.0.0.1"
    #: TCP port of the HTTP endpoints. 9000 as Sentry self-hosted, so DSNs look familiar.
    port: int = 9000
    #: Host name written into printed DSNs (what SDKs connect to); defaults to ``host``.
    public_host: str | None = None
    #: Existing Ray cluster to join (``host:port`` or ``auto``); empty starts a local Ray.
    ray_address: str | None = None
    #: Where Serve runs its HTTP proxy (HAProxy): ``EveryNode`` (any node answers on
    #: ``port``; put a load balancer in front), ``HeadOnly`` (one entry point; also when
    #: several Ray nodes share one machine and so one address), or ``Disabled``.
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    #: At most this many replicas of one Serve deployment (ingest, API) per node, so the
    #: replicas of a cluster spread over its nodes (Serve packs them where there is room;
    #: a replica that finds no node is what makes Ray's autoscaler add one). 0: no limit.
    max_replicas_per_node: int = 0
    #: Ray object store size in bytes for a local Ray. Ray picks 30% of RAM (~7 GB here)
    #: unless told; an error tracker moves small batches, a few hundred MB is plenty.
    ray_object_store_bytes: int = 256 * MIB
    #: Start Ray's API server (state API, job submission), log monitor and autoscaler
    #: monitor in a local Ray too. Off, ``crashray up`` leaves them out: ~180 MiB and three
    #: processes that serve nothing on one node (cluster/ray_head.py). On a cluster, its
    #: own ``ray start`` decides.
    ray_head_tools: bool = False

    # --- HTTP ingress (HAProxy, in front of Serve) and stopping --------------------------
    #: HAProxy's statistics page and Prometheus exporter ports; 0 picks a free port at
    #: start so several instances can share a host.
    haproxy_stats_port: int = 0
    haproxy_metrics_port: int = 0
    #: Address those two listen on. Serve binds them on every interface; they show every
    #: route, backend and error count, so they stay on this machine unless opened here.
    haproxy_side_host: str = "127.0.0.1"
    #: Seconds a client has to send a request's headers (HAProxy ``timeout http-request``),
    #: which also covers the first 16 KiB of its body (``option http-buffer-request``).
    #: SDKs send a whole envelope within a second; 10 s leaves room for slow mobile links
    #: and TCP retransmits. Serve sets none, so a connection with unfinished headers was
    #: held for ``timeout client`` (an hour): a few thousand stalled every endpoint.
    haproxy_http_request_timeout_s: int = Field(default=10, ge=1)
    #: Seconds an idle keep-alive connection is kept between two requests (HAProxy
    #: ``timeout http-keep-alive``, Serve's ``keep_alive_timeout_s``; Serve: 90 s).
    #: SDKs send events in bursts and reuse their connection within seconds; an idle one
    #: costs a connection slot and two buffers.
    haproxy_keep_alive_timeout_s: int = Field(default=30, ge=1)
    #: Seconds a client may stay silent while it should be sending or reading (HAProxy
    #: ``timeout client``; Serve: 3600 s, for streaming model output). Crashray's answers
    #: are small and quick; a client silent for a minute is gone.
    haproxy_client_timeout_s: int = Field(default=60, ge=1)
    #: Connections HAProxy holds at once (``maxconn``; Serve: 4096). 0 sizes it for the
    #: machine: what the open-files limit allows (three descriptors per connection) and an
    #: eighth of the memory holds in HAProxy's buffers (40 KiB per connection), between
    #: 1,024 and 100,000 (``cluster.haproxy.machine_maxconn``).
    haproxy_maxconn: int = Field(default=0, ge=0)
    #: Seconds ``crashray up`` may take to stop once asked (SIGTERM, Ctrl-C): Serve stops
    #: taking requests and the consumers finish their batch within two thirds of it; what
    #: is still running then (Ray, HAProxy, PostgreSQL) is ended in the rest. Service
    #: managers wait this long or longer before SIGKILL (systemd: 90 s; give Docker
    #: ``--stop-timeout 30``, its default is 10 s).
    shutdown_timeout_s: float = Field(default=30.0, gt=0)

    # --- databases ---------------------------------------------------------------------
    #: PostgreSQL URL for metadata and the ingest queue. Empty: a private PostgreSQL is
    #: started under ``data_dir/postgres`` (embedded default).
    postgres_url: str | None = None
    #: ClickHouse server URL (``http://user:pass@host:8123/db``). Empty: the embedded
    #: ClickHouse engine (chDB) under ``data_dir/clickhouse``, owned by one actor.
    clickhouse_url: str | None = None
    #: Days an event is kept (ClickHouse TTL, per row so it can vary per project later).
    retention_days: int = 90

    # --- retention of everything else that grows (storage/retention.py) ---------------
    # ClickHouse keeps each table by a TTL (set from these at every start, idempotently);
    # PostgreSQL tables are pruned in bounded batches by the metrics sampler's sweep; Ray's
    # session directories of earlier runs under the data directory are removed. ``crashray
    # storage`` prints what each horizon will remove next.
    #: Days outcome tallies (``outcomes``) and raw release-health sessions
    #: (``sessions_raw``) are kept: raw data, as events (Sentry: 90 days).
    outcomes_retention_days: int = Field(default=90, ge=1, le=65535)
    sessions_retention_days: int = Field(default=90, ge=1, le=65535)
    #: Days the hourly per-issue rollup (``issue_counts_hourly``) is kept: aggregates are
    #: small (one row per issue and hour) and make year-long trends, so a year.
    rollup_retention_days: int = Field(default=365, ge=1, le=65535)
    #: Days an issue is kept after it was last seen; its events are gone by then (Sentry's
    #: cleanup deletes groups the same way). Unset: ``retention_days``. A later event with
    #: its fingerprint opens a new issue.
    issue_retention_days: float | None = Field(default=None, gt=0)
    #: Days an issue's activity (status changes, regressions, comments) is kept: a year.
    issue_activity_retention_days: float = Field(default=365.0, gt=0)
    #: Days closed anomaly episodes and finished or abandoned reprocess jobs are kept.
    anomaly_retention_days: float = Field(default=90.0, gt=0)
    reprocess_job_retention_days: float = Field(default=90.0, gt=0)
    #: Days dead letters are kept before they are dropped unreplayed; 0 (the default)
    #: keeps them until an operator replays or drops them (``crashray dead-letters``):
    #: accepted data is never lost silently. Replayed or dropped ones are gone at once.
    dead_letter_retention_days: float = Field(default=0.0, ge=0)
    #: Days Ray's session directories of earlier runs (their logs, spilled objects) stay
    #: under the data directory; the running session's is never touched.
    ray_session_retention_days: float = Field(default=7.0, ge=0)
    #: Seconds between two retention sweeps, and rows one sweep deletes per table and
    #: statement (the next statement or sweep continues: no long lock, no huge WAL burst).
    retention_sweep_interval_s: float = Field(default=3600.0, gt=0)
    retention_batch_rows: int = Field(default=5_000, ge=1)
    #: Batches one sweep runs per table at most; the rest waits for the next sweep.
    retention_max_batches: int = Field(default=100, ge=1)

    # --- ingest limits (Relay's defaults; spec §3.2) -------------------------------------
    #: Largest compressed request body in bytes (Relay: 20 MB).
    max_request_bytes: int = RELAY_MAX_REQUEST_BYTES
    #: Largest envelope after decompression in bytes (Relay max_envelope_size: 100 MB).
    max_envelope_bytes: int = RELAY_MAX_ENVELOPE_BYTES
    #: Largest event/transaction item in bytes (Relay max_event_size: 1 MiB).
    max_event_bytes: int = RELAY_MAX_EVENT_BYTES
    #: Largest single attachment and all attachments of one envelope, bytes (Relay: 100 MB).
    max_attachment_bytes: int = RELAY_MAX_ATTACHMENT_BYTES
    max_attachments_total_bytes: int = RELAY_MAX_ATTACHMENT_BYTES
    #: Session items per envelope (Relay max_session_count: 100).
    max_session_items: int = RELAY_MAX_SESSION_ITEMS
    #: Largest client_report item in bytes (Relay: 4 KiB).
    max_client_report_bytes: int = RELAY_MAX_CLIENT_REPORT_BYTES
    #: Largest check-in item in bytes (Relay: 100 KB).
    max_check_in_bytes: int = 100 * KIB
    #: Items per envelope; SDKs send a handful, this stops pathological envelopes.
    max_envelope_items: int = 1000
    #: Bytes of a body read before its sender's key is known: for an envelope that names
    #: its key only in its ``dsn`` header (browser SDKs behind a tunnel, offline envelopes
    #: of native SDKs), ingest decodes just its first line, from at most this many bytes on
    #: the wire and decoded, and refuses (401) when the line is not complete by then. An
    #: envelope header is well under 4 KiB; 64 KiB bounds what an unknown sender's gzip bomb
    #: or junk costs. Requests with the key in a header or the URL are authorized before
    #: any of their body is read.
    max_unauthenticated_body_bytes: int = Field(default=64 * KIB, ge=1 * KIB)

    # --- ingest service ----------------------------------------------------------------
    #: Ingest replicas (Serve) kept at least and grown to at most by Serve's autoscaler,
    #: which scales on requests in flight (``ingest_target_ongoing_requests``). One replica
    #: takes ~1,000 events/s on 2 cores and is a process of ~150-250 MB, so the embedded
    #: default starts one and may add one more; on a cluster raise the maximum. Equal
    #: bounds: that many replicas, no autoscaling (cluster/scaling.py).
    ingest_min_replicas: int = Field(default=1, ge=1)
    ingest_max_replicas: int = Field(default=2, ge=1)
    #: Deprecated: use ``ingest_min_replicas``. When set (and ``ingest_min_replicas`` is
    #: not), the replicas started and kept at least; the maximum is raised to it if lower.
    ingest_replicas: int | None = Field(default=None, ge=1)
    #: Requests in flight per ingest replica that Serve scales towards (its
    #: ``target_ongoing_requests``; Serve's default of 2 suits slow model calls). An ingest
    #: request takes ~10-20 ms (the hand-off waits for its batch's commit), so 16 in flight
    #: is ~1,000 requests/s, about what a replica handles, or a replica whose requests
    #: started to wait.
    ingest_target_ongoing_requests: float = Field(default=16.0, gt=0)
    #: Requests one ingest replica works on at once. Serve's default of 5 collapses under
    #: SDK load (ARCHITECTURE.md); the hand-off is batched, so many can wait cheaply.
    ingest_max_ongoing_requests: int = 256
    #: Requests allowed to queue per replica before Serve answers 503 at once; bounded so
    #: overload is a fast error the SDK records, never an unbounded queue.
    ingest_max_queued_requests: int = 1024
    #: Hand-off batching (``@serve.batch``): at most this many items per PostgreSQL insert,
    #: waiting at most this long for a batch to fill.
    handoff_batch_max_items: int = 256
    handoff_batch_wait_s: float = 0.005
    #: Seconds a key's state is cached by ingest before re-reading PostgreSQL; a revoked
    #: key stops working within this (the pipeline promises ≤ 10 s).
    key_cache_refresh_s: float = 5.0
    #: Least seconds between two cache reloads caused by unknown keys, so a flood of
    #: random keys cannot hammer PostgreSQL.
    key_cache_miss_reload_s: float = 1.0
    #: Accepted-but-unprocessed items above which ingest answers 503 before writing
    #: anything (global guard; an unbounded queue is never an option).
    max_queued_items: int = 2_000_000
    #: Items (and payload bytes) one organization may have waiting in that queue; above
    #: either, its requests answer 429 (reason ``org_backlog``) while other organizations
    #: keep being served, so one tenant's flood never reaches the global guard above.
    #: 100,000 items are one to five minutes of a laptop's processing (300 to 1,000
    #: events/s) and a twentieth of the global guard, so twenty flooding tenants fit before
    #: it; 1 GiB holds ~190,000 typical events (5.5 KB), so for ordinary events the item cap
    #: decides and the bytes cap stops large events and attachments. Checked on figures at
    #: most a second old: an organization may get up to a second's intake past a cap.
    #: 0 turns a cap off.
    max_queued_items_per_org: int = Field(default=100_000, ge=0)
    max_queued_bytes_per_org: int = Field(default=1 * GIB, ge=0)
    #: Free bytes on the data directory's disk below which ingest refuses (503) before
    #: writing anything, so a full disk never loses accepted events. 0 turns the check off.
    min_free_disk_bytes: int = 1_073_741_824
    #: Seconds ingest waits for the PostgreSQL queue to take a batch. Past that (a server
    #: that hangs rather than refuses) the batch goes to a spool on the node's disk
    #: (``<data_dir>/spool``, fsync'd) and the SDK gets its 200; batches keep going there
    #: until a drainer has moved them all into the queue, each stored once
    #: (storage/spool.py). Two seconds is well above a loaded instance's whole accept p99
    #: (~0.1 s at 300 events/s on a 2-core machine, bench/RESULTS.md) and far under the
    #: SDKs' own timeouts (the Python SDK's 30 s read timeout). Not used with Kafka,
    #: whose delivery timeout bounds the hand-off (CRASHRAY_KAFKA_DELIVERY_TIMEOUT_S).
    handoff_timeout_s: float = Field(default=2.0, gt=0)
    #: Bytes the spool may hold per node; past that ingest answers 503 with Retry-After
    #: while the queue does not answer. 256 MiB are ~45,000 typical events (5.5 KB), a
    #: couple of minutes of a laptop's intake. 0: no spool (503 past the time limit).
    spool_max_bytes: int = Field(default=256 * MIB, ge=0)

    # --- Serve autoscaling (ingest and API replicas) -------------------------------------
    #: Seconds Serve sees more requests in flight than the target before it adds a replica
    #: (Serve's default): a shorter burst waits in the replicas, cheaply for ingest, whose
    #: hand-off batches it.
    serve_upscale_delay_s: float = Field(default=30.0, ge=0)
    #: Seconds Serve sees fewer requests in flight than the target before it removes a
    #: replica. Serve's default is 600 s; five minutes gives the ~200 MB of a burst's extra
    #: replica back to a laptop sooner, and a replica starts again in a few seconds.
    serve_downscale_delay_s: float = Field(default=300.0, ge=0)

    # --- rate limiting -----------------------------------------------------------------
    #: Rate-limiter actors (``actors/rate_limit.py``); organization ``o`` belongs to shard
    #: ``o % rate_limit_shards``, so an organization's counters are exact in one place.
    rate_limit_shards: int = 1
    #: Seconds quotas, key rate limits and spike-protection settings are cached by the
    #: rate limiters, and a refusal by ingest replicas (which then refuse without asking);
    #: a change applies within twice this.
    quota_settings_refresh_s: float = 5.0
    #: Spike protection (per project, on by default, changeable per project): at most
    #: max(floor, multiplier * the project's average accepted events per hour over the last
    #: 72 hours) events per hour.
    spike_multiplier: float = 10.0
    spike_floor_per_hour: int = 100_000

    # --- processing --------------------------------------------------------------------
    #: Consumer actors draining the queue. Relay processing is ~1 ms CPU per event, so
    #: two consumers keep both cores of a laptop busy at ~1,000 events/s. The pool's size
    #: when it is not autoscaled, and the default of both bounds below.
    consumers: int = Field(default=2, ge=0)
    #: The consumer pool's bounds. With a maximum above the minimum, the pool autoscaler
    #: (actors/pool_autoscaler.py) sizes the pool between them by the queue's lag. Unset,
    #: both are ``consumers``: a fixed pool, as on a laptop, where more consumers than cores
    #: would only compete. Each consumer is a process of ~200 MB using up to a core.
    consumers_min: int | None = Field(default=None, ge=0)
    consumers_max: int | None = Field(default=None, ge=0)
    #: Seconds an item may wait before the pool grows: it grows when the oldest waiting
    #: item has waited longer, or when the backlog would take longer to drain at the pool's
    #: rate. A batch takes about a second, so ten means the pool is several batches behind.
    #: The pool is quiet (may shrink) while fewer than one batch of items waits and none for
    #: more than a quarter of this.
    consumer_scale_up_age_s: float = Field(default=10.0, gt=0)
    #: Seconds after a change before the pool grows again: a new consumer takes a few
    #: seconds to start and to show in the measured rate.
    consumer_scale_up_cooldown_s: float = Field(default=15.0, ge=0)
    #: Seconds the pool must be quiet, and since its last change, before one consumer is
    #: retired; long enough that a pause between two bursts keeps the pool.
    consumer_scale_down_delay_s: float = Field(default=120.0, ge=0)
    #: Consumers added at most in one step (the step is sized to drain the backlog within
    #: ``consumer_scale_up_age_s`` at the rate each consumer reached).
    consumer_scale_up_step: int = Field(default=2, ge=1)
    #: Seconds between two measurements of the queue's lag (~1 ms of PostgreSQL each with
    #: 5,000 items waiting, 14-26 ms with 100,000 or more: bench/queue_lag.py).
    consumer_scale_interval_s: float = Field(default=2.0, gt=0)
    #: Items a consumer claims at once; bigger batches amortize PostgreSQL and ClickHouse
    #: round trips, smaller ones keep accept-to-queryable latency low.
    consumer_batch_items: int = 500
    #: Threads each consumer processes a batch's events on (normalize, scrub, symbolicate,
    #: group). sentry-relay's calls release the GIL, so 2 threads use both cores of one
    #: process: fewer consumer processes can do the same work (bench/RESULTS.md).
    consumer_threads: int = Field(default=1, ge=1, le=64)
    #: Seconds a consumer waits after a part-filled batch before claiming again, so that
    #: batches grow under load (fewer, larger ClickHouse inserts) at a small latency cost.
    consumer_batch_wait_s: float = 0.1
    #: Seconds a claim is held; a consumer that dies releases its batch after this.
    consumer_lease_s: float = 30.0
    #: Seconds a consumer sleeps between polls when idle (NOTIFY wakes it sooner).
    consumer_idle_poll_s: float = 0.5
    #: Seconds a consumer caches a project's scrubbing and grouping settings; a change
    #: (say, new fingerprint rules) applies to events processed after this.
    project_settings_refresh_s: float = 10.0
    #: Seconds an event id is remembered after it was counted, so a re-delivered event is
    #: not counted twice and a second event with the same id is dropped (the first stays,
    #: as in Sentry). Re-deliveries come within a lease (``consumer_lease_s``) and SDK
    #: retries within minutes, so a day is ample; older ids are pruned so the table stays
    #: bounded.
    dedup_window_s: float = 86_400.0
    #: Claims after which an unfinished item moves to ``ingest_dead_letters`` (kept; see
    #: ``crashray dead-letters``). A claim given back because ClickHouse did not answer
    #: is not counted, so outages never dead-letter anything; what is left are items that
    #: keep failing on their own or keep killing their consumer.
    consumer_max_attempts: int = 20
    #: Seconds a consumer waits after a batch failed because ClickHouse did not answer;
    #: doubled after each further failure up to ``consumer_retry_backoff_max_s``. Its items
    #: are given back meanwhile; it asks ClickHouse (a ping) before claiming again.
    consumer_retry_backoff_s: float = 1.0
    #: Longest wait between two tries during a ClickHouse outage: how long after recovery
    #: the backlog may wait at most before it drains.
    consumer_retry_backoff_max_s: float = 30.0
    #: Seconds between a consumer's sweeps for batch counts left unshipped to ClickHouse
    #: (a consumer died after its commit, or ClickHouse failed right then); they are picked
    #: up once their lease (``consumer_lease_s``) has run out.
    consumer_outbox_sweep_s: float = 5.0

    # --- symbolication (source maps; actors/symbolicate.py) -----------------------------
    #: Symbolication actors; a build's maps (by debug ID, else by project and release) are
    #: parsed on one of them. 0: each consumer symbolicates in its own process.
    symbolication_actors: int = 0
    #: Bytes of parsed source maps each cache keeps (counted as the sizes of the minified
    #: file and map, an upper bound of their parsed form); least recently used go first.
    #: 256 MiB holds a few dozen builds of a large single-page app.
    symbolication_cache_bytes: int = 256 * MIB
    #: Source maps larger than this are not parsed (the frames stay minified, error
    #: ``js_too_large``). Large single-page apps ship maps of tens of MB; parsing one costs
    #: about its size again in memory while it happens.
    symbolication_max_map_bytes: int = 64 * MIB
    #: Seconds a symbolicating process remembers which uploaded file a lookup found (or
    #: that none matched), so a build's events do not query the database each time. A
    #: source map uploaded is used for events processed at most this long after.
    symbolication_lookup_cache_s: float = Field(default=5.0, ge=0)

    # --- source fetching (events/source_fetch.py; per project, off by default) ----------
    # A project fetches the minified files and maps it has not uploaded from their URLs
    # only when it sets ``scrapeJavaScript`` and ``allowedDomains`` (project settings).
    #: Seconds one fetch may take in all (connect, redirects, every read); a server that
    #: trickles bytes is cut off. Sentry waits 5 s for a source file too. The consumer
    #: waits meanwhile, so this bounds what one slow host costs an event.
    source_fetch_timeout_s: float = Field(default=5.0, gt=0)
    #: Largest file fetched, bytes; reading stops past it (``fetch_too_large``). 40 MiB
    #: as Sentry's limit: large single-page apps' maps are tens of MB.
    source_fetch_max_bytes: int = Field(default=40 * MIB, ge=KIB)
    #: Seconds a fetched file is reused for other events before it is fetched again.
    source_fetch_cache_ttl_s: float = Field(default=300.0, ge=0)
    #: Seconds a failed fetch (host down, 404, timeout) is remembered, so a down host is
    #: not asked again for every event of a burst.
    source_fetch_failure_ttl_s: float = Field(default=60.0, ge=0)
    #: Bytes of fetched files each process caches (by URL, least recently used go first).
    source_fetch_cache_bytes: int = Field(default=128 * MIB, ge=0)
    #: Fetch from hosts that resolve to private, loopback or link-local addresses. Off:
    #: a DSN is public, and an event naming ``http://169.254.169.254/`` or an intranet
    #: host must not make Crashray fetch it (SSRF). On for tests and intranet installs.
    source_fetch_allow_private: bool = False
    #: Seconds a consumer reuses a project's ``allowedDomains``/``scrapeJavaScript``.
    source_fetch_settings_refresh_s: float = Field(default=10.0, ge=0)

    # --- grouping ----------------------------------------------------------------------
    #: Grouping actors (``actors/grouping.py``); project ``p`` belongs to shard
    #: ``p % grouping_shards``. One shard decides all of a project's new issues.
    grouping_shards: int = 1
    #: Hash → issue pairs each grouping shard keeps in memory (about 150 bytes each); the
    #: least recently used go first.
    grouping_cache_hashes: int = 200_000
    #: Grouping results each consumer (and each ``crashray import`` processing actor) keeps
    #: per project, by what grouping reads of an event (events/grouping_memo.py): an event
    #: like one seen before is not grouped again. A few KB each; 0: none.
    grouping_memo_entries: int = Field(default=5_000, ge=0)
    #: Days a project's previous grouping version keeps finding existing issues after the
    #: project moves to a new one (Sentry calls it the secondary grouping config).
    grouping_transition_days: float = 30.0
    #: Move auto-updating projects to the newest grouping version at start (each with a
    #: transition); projects whose version was chosen through the API stay where they are.
    grouping_auto_upgrade: bool = True

    # --- users -------------------------------------------------------------------------
    #: Seconds a dashboard login lasts (Sentry: two weeks).
    session_lifetime_s: float = 14 * 86_400.0
    #: Failed logins of a username from one address within ``login_window_s`` before each
    #: further attempt must wait a growing delay (``login_max_delay_s``); an address that
    #: fails four times as often, for any usernames, is refused (429) until the window
    #: has passed.
    login_max_failures: int = 5
    login_window_s: float = 300.0

    # --- uploaded source files (source maps; storage/artifacts.py) ---------------------
    #: Where uploaded chunks and the files of artifact bundles are kept (by content hash,
    #: each stored once). Empty: ``<data_dir>/artifacts``. Every API replica must see the
    #: same directory: on a cluster of several machines, a shared filesystem mounted on each.
    artifact_dir: Path | None = None
    #: Size of the chunks sentry-cli splits an upload into, bytes (Sentry: 8 MiB).
    artifact_chunk_bytes: int = Field(default=8 * MIB, ge=64 * KIB)
    #: Largest chunk-upload request, bytes (Sentry: 32 MiB); sentry-cli sends at most
    #: this much per request (so this / ``artifact_chunk_bytes`` chunks at once).
    artifact_max_request_bytes: int = Field(default=32 * MIB, ge=64 * KIB)
    #: Largest assembled bundle, bytes. An API replica holds one whole while it unpacks
    #: it; 256 MiB is far above the source maps of large web apps (tens of MiB).
    artifact_max_bundle_bytes: int = Field(default=256 * MIB, ge=KIB)
    #: Largest sum of a bundle's files unpacked, bytes: a zip of a few KiB can claim
    #: gigabytes, and these are read whole.
    artifact_max_unpacked_bytes: int = Field(default=1024 * MIB, ge=KIB)
    #: Chunk-upload requests sentry-cli sends at once (Sentry: 8). Each holds up to
    #: ``artifact_max_request_bytes`` in an API replica.
    artifact_upload_concurrency: int = Field(default=4, ge=1, le=64)
    #: Days an uploaded bundle or release file is kept after its last upload (uploading
    #: the same bundle again restarts it). Sentry keeps artifact bundles 90 days.
    artifact_retention_days: float = Field(default=90.0, gt=0)
    #: Hours chunks that never became a bundle (an interrupted upload) are kept.
    artifact_chunk_retention_hours: float = Field(default=24.0, gt=0)
    #: Seconds between two retention sweeps of uploaded files (expired bundles and release
    #: files, chunks of unfinished uploads, blobs no file names any more); one consumer
    #: sweeps at a time.
    artifact_sweep_interval_s: float = Field(default=3600.0, gt=0)

    # --- alert notifications (actors/notifier.py, storage/notifications.py) -------------
    #: Seconds one attempt at a destination may take (connect, send, answer) before it
    #: counts as failed and is retried. Slack answers within a second; 10 s leaves room
    #: for a slow self-hosted receiver without letting one hold a sending slot for long.
    notify_timeout_s: float = Field(default=10.0, gt=0)
    #: Attempts per delivery before it is marked failed (the first included). With the
    #: backoff below, 8 attempts span about 10 minutes: a receiver's restart or deploy
    #: passes, a dead one shows as failed soon.
    notify_max_attempts: int = Field(default=8, ge=1)
    #: Seconds before the first retry; each further retry waits twice as long, at most
    #: ``notify_backoff_cap_s`` (5 s, 10 s, 20 s … 300 s).
    notify_backoff_base_s: float = Field(default=5.0, gt=0)
    notify_backoff_cap_s: float = Field(default=300.0, gt=0)
    #: Seconds a notifier holds a claimed delivery; another notifier takes it over only
    #: after this, so it must exceed ``notify_timeout_s`` (a send in progress is never
    #: duplicated) and bounds how late a dead notifier's deliveries go out.
    notify_lease_s: float = Field(default=60.0, gt=0)
    #: Deliveries one notifier sends at once (threads): a slow destination holds one slot,
    #: never the others.
    notify_concurrency: int = Field(default=8, ge=1, le=256)
    #: Seconds the notifier waits for a NOTIFY before it looks for due retries anyway.
    notify_idle_poll_s: float = Field(default=1.0, gt=0)
    #: Days delivered notifications stay in the delivery log; failed ones stay
    #: ``notify_failed_retention_days`` (longer: they are what someone must look into).
    notify_retention_days: float = Field(default=14.0, gt=0)
    notify_failed_retention_days: float = Field(default=30.0, gt=0)
    #: Seconds between two retention sweeps of the delivery log (one notifier at a time).
    notify_prune_interval_s: float = Field(default=600.0, gt=0)
    #: Failed attempts in a row at one destination after which the project shows a
    #: warning naming it (a delivery that fails all ``notify_max_attempts`` raises it).
    notify_failure_warning_threshold: int = Field(default=3, ge=1)
    #: SMTP server for alert e-mails; empty: e-mail actions fail with a message naming
    #: this setting. STARTTLS on 587 is what most relays take; ``smtp_ssl`` is port 465's
    #: implicit TLS.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    #: The From: address of alert e-mails.
    smtp_from: str = "crashray@localhost"
    smtp_starttls: bool = True
    smtp_ssl: bool = False

    # --- anomaly detection (events/anomaly.py, actors/detectors.py) ----------------------
    #: Detector classes by import path (``"module:Class"``, as JSON:
    #: ``'["events.anomaly:SeasonalDetector"]'``), run besides the ones packages register in
    #: the entry-point group ``crashray.detectors``. Default: the two built-ins (Sentry's
    #: escalating forecast, the seasonal baseline of a project's volume); ``[]``: none.
    detectors: list[str] = Field(default_factory=lambda: [
        "events.anomaly:EscalatingDetector", "events.anomaly:SeasonalDetector"])
    #: Also run the detectors installed packages register (entry points).
    detector_entry_points: bool = True
    #: Actors per detector, each watching the projects whose id modulo this is its shard
    #: number. One handles thousands of projects (a minute's counts are a few rows each);
    #: more spread a large installation's detectors over the cluster.
    detector_shards: int = Field(default=1, ge=1, le=1024)
    #: Seconds between observations: the series are counts per minute.
    detector_interval_s: float = Field(default=60.0, gt=0)
    #: Minutes each observation reads back (overlapping windows count late-received events
    #: in the minute they arrived in, and a missed observation loses nothing).
    detector_window_minutes: int = Field(default=10, ge=1, le=120)
    #: Seconds between checkpoints of what a detector has learnt (PostgreSQL): a restart
    #: loses at most this much learning, never the history before it.
    detector_checkpoint_interval_s: float = Field(default=300.0, gt=0)
    #: Seconds an anomaly may go unreported before its episode is closed.
    anomaly_close_after_s: float = Field(default=300.0, gt=0)

    # --- query -------------------------------------------------------------------------
    #: Largest page size of list endpoints (Sentry: 100).
    api_max_page_size: int = 100
    #: API replicas (Serve) kept at least and grown to at most, as for ingest. The
    #: dashboard's requests are few and each replica holds a PostgreSQL pool, so one, and
    #: a second under load. Equal bounds: no autoscaling.
    api_min_replicas: int = Field(default=1, ge=1)
    api_max_replicas: int = Field(default=2, ge=1)
    #: Serve the Web API (``/api/0``) from replicas of its own. Unset (the default): yes on
    #: a cluster (``CRASHRAY_RAY_ADDRESS`` set), no on one node, where the ingest replicas
    #: answer it too, as they answer the dashboard's pages: a replica process less (~110
    #: MiB idle, ~2 CPU-s less to start; bench/RESULTS.md). The cost: an SDK flood then
    #: shares the ingest replicas' event loop and request slots
    #: (``CRASHRAY_INGEST_MAX_ONGOING_REQUESTS``) with the dashboard's API calls (measured:
    #: ~30 ms more at the median); ``true`` keeps them apart on one node too. Without
    #: replicas of its own the API follows ingest's replica bounds, not the two above.
    api_own_replicas: bool | None = None
    #: Requests in flight per API replica that Serve scales towards (Serve's default: a
    #: replica takes at most 5 at once, so more than 2 on average means requests queue).
    api_target_ongoing_requests: float = Field(default=2.0, gt=0)
    #: Largest request body the Web API reads, in bytes; larger ones answer 413 before
    #: they are parsed. The largest bodies it takes are project settings with grouping and
    #: fingerprint rules (a few KiB; Sentry's own rule sets stay far below 100 KiB) and
    #: bulk updates (their issue ids travel in the query string); 1 MiB leaves ample room.
    #: Sentry (Django) refuses non-file bodies above 2.5 MiB (DATA_UPLOAD_MAX_MEMORY_SIZE).
    api_max_body_bytes: int = 1 * MIB
    #: Longest comment (note) on an issue, in characters: a page of discussion, far above
    #: what a triage note needs, small enough that an issue's activity stays quick to load.
    api_note_max_chars: int = Field(default=8_192, ge=1)
    #: Proxies whose ``X-Forwarded-For`` entries are believed (addresses or networks, as
    #: JSON: ``'["127.0.0.1", "10.0.0.0/8"]'``): the client is the rightmost entry not
    #: appended by one of them (events/proxies.py). Loopback: Serve's HAProxy and a
    #: reverse proxy on the same host.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    #: Longest delay, in seconds, that failed logins impose on the next attempt for the
    #: same username (it doubles from 1 s with each failure past ``login_max_failures``;
    #: storage/tenancy.py), instead of locking the username out for everyone.
    login_max_delay_s: float = 60.0

    # --- Kafka hand-off (optional; storage/kafka.py, README "Kafka hand-off") -----------
    #: Kafka brokers (``host:port,…``) ingest hands accepted items to instead of the
    #: PostgreSQL queue. Unset (the default): the PostgreSQL queue, right for one machine.
    kafka_bootstrap: str | None = None
    #: Topics of accepted items, of outcome tallies, and of messages consumers could not
    #: read (with the reason in a header).
    kafka_events_topic: str = "crashray-events"
    kafka_outcomes_topic: str = "crashray-outcomes"
    kafka_dead_letters_topic: str = "crashray-dead-letters"
    #: Consumer group of the consumers (and whose lag ingest's global backlog guard reads).
    kafka_consumer_group: str = "crashray-consumers"
    #: Partitions per topic, created when missing: the most consumers that can share the
    #: work. 12 divides among 1, 2, 3, 4 or 6 consumers evenly.
    kafka_partitions: int = Field(default=12, ge=1)
    #: Copies of each partition; with ``acks=all`` an accepted item survives the loss of
    #: all but one. 3 as Kafka's own production advice; a one-broker cluster needs 1.
    kafka_replication_factor: int = Field(default=3, ge=1)
    #: Retention by time: items older than this are deleted whether read or not. Three
    #: days outlast a weekend outage of the consumers.
    kafka_retention_ms: int = Field(default=3 * 86_400_000, ge=60_000)
    #: Retention by size, per partition: what bounds disk. Each broker holds about
    #: partitions * 3 topics * replication factor / brokers * (this + one segment) at most.
    kafka_retention_bytes: int = Field(default=1 * GIB, ge=1 * MIB)
    #: Segment size: retention deletes whole segments, so the disk bound above is passed by
    #: up to one segment per partition.
    kafka_segment_bytes: int = Field(default=128 * MIB, ge=1 * MIB)
    #: Largest item the Kafka hand-off takes (its message, with the format's header); an
    #: event is at most 1 MiB (CRASHRAY_MAX_EVENT_BYTES), larger attachments are refused
    #: (400) on Kafka until they are chunked.
    kafka_max_message_bytes: int = Field(default=8 * MIB, ge=64 * KIB)
    #: Milliseconds the producer waits to fill a batch; ``@serve.batch`` already batches,
    #: so a little: it adds to every request's latency.
    kafka_linger_ms: float = Field(default=5.0, ge=0)
    #: Seconds ingest waits for the brokers' acknowledgement of a batch (librdkafka's
    #: ``message.timeout.ms``) before answering 503; the SDK sends again. Well below the
    #: SDKs' own HTTP timeouts (sentry-python: 30 s).
    kafka_delivery_timeout_s: float = Field(default=5.0, gt=0)
    #: Messages and KiB a replica's producer may hold unacknowledged; past either, ingest
    #: answers 503 at once instead of buffering more in memory.
    kafka_buffer_max_messages: int = Field(default=100_000, ge=1)
    kafka_buffer_max_kbytes: int = Field(default=256 * 1024, ge=1)
    #: Milliseconds without a heartbeat after which the group hands a consumer's
    #: partitions to the others (Kafka's default, 45 s): how long a crashed consumer's
    #: partitions wait. Shorter reacts faster but risks rebalances on a busy machine.
    kafka_session_timeout_ms: int = Field(default=45_000, ge=1000)

    # --- health (serve_apps/health.py: GET /healthz, GET /readyz) ------------------------
    #: ``/readyz`` answers 503 when the oldest queued item has waited this long: consumers
    #: are down or far behind (a burst drains in seconds on a healthy instance).
    ready_max_queue_age_s: float = Field(default=300.0, gt=0)
    #: Seconds each readiness check (PostgreSQL, ClickHouse) may take before it counts as
    #: failed.
    ready_check_timeout_s: float = Field(default=2.0, gt=0)
    #: Seconds a replica reuses its readiness answer, so frequent probes stay cheap.
    ready_cache_s: float = Field(default=1.0, ge=0)

    # --- metrics (cluster/metrics.py; Ray's Prometheus endpoint on every node) -----------
    #: Port of Ray's metrics endpoint (``/metrics``, Prometheus text) on the node of a
    #: local Ray started by ``crashray up``: Ray's ``_metrics_export_port``. 0 lets Ray pick
    #: a free port (several instances on one machine never collide); ``crashray status``
    #: prints it per node. Set a fixed one (e.g. 9091) for a Prometheus scrape config. On
    #: an existing cluster it is ``ray start --metrics-export-port`` of each node.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Whether Crashray records its metrics at all (cluster/metrics.py reads
    #: ``CRASHRAY_METRICS_ENABLED`` in each process; set it on every node). On by default;
    #: off only to measure what they cost (bench/ingest.py, bench/RESULTS.md).
    metrics_enabled: bool = True
    #: Seconds between two samples of the queue, dead letters, consumers and data disk
    #: (actors/metrics_sampler.py). Prometheus scrapes every 15-60 s; a sample as often
    #: costs one bounded queue scan (~1-26 ms, bench/queue_lag.py).
    metrics_sample_interval_s: float = Field(default=15.0, gt=0)
    #: Waiting queue items counted at most per sample (the count is a scan; the pool
    #: autoscaler's cap, LAG_COUNT_CAP). Past it the gauge reads the cap; the oldest item's
    #: age still tells how far behind the consumers are.
    metrics_queue_count_cap: int = Field(default=100_000, ge=1)

    # --- operator page and self-reporting (serve_apps/api/operations.py, cluster/self_report.py)
    #: Seconds an API replica reuses the instance's figures (``GET /api/0/operations/``):
    #: every open operator page polls every few seconds, and one gathering asks Ray, the
    #: consumers and every node's metrics endpoint.
    operator_cache_s: float = Field(default=2.0, ge=0)
    #: Seconds each part of the instance's figures may take (the consumers' answers, one
    #: node's metrics endpoint); a part past it is reported missing, the rest answered.
    operator_timeout_s: float = Field(default=3.0, gt=0)
    #: Seconds of intake counters behind the rates the operator page shows. Ray's metrics
    #: agent exports every ~10 s, so a minute smooths its steps.
    operator_rate_window_s: float = Field(default=60.0, gt=0)
    #: A DSN (of a project on this Crashray, another one, or Sentry) that Crashray's own
    #: processes report their exceptions to with sentry-sdk. Unset (the default): nothing
    #: is reported. Events raised while ingesting are never reported (they would go into
    #: the ingest that is failing: cluster/self_report.py).
    self_dsn: str | None = None
    #: Fraction of Crashray's own errors reported (sentry-sdk's ``sample_rate``).
    self_sample_rate: float = Field(default=1.0, ge=0, le=1)
    #: Most self-reports one process sends per minute, whatever the sample rate: a fault
    #: that repeats per request must not become a flood.
    self_max_events_per_minute: int = Field(default=60, ge=1)

    # --- bulk jobs (pipelines/: crashray export, reprocess, rollups rebuild) ------------
    #: Ray Data tasks one bulk job runs at once, each taking ``pipeline_task_cpus``. The
    #: jobs share the Ray cluster with ingest, consumers and the API; one task at a time
    #: leaves a 2-core machine's other core to them. Raise it on a larger cluster.
    pipeline_concurrency: int = Field(default=1, ge=1)
    #: CPUs Ray reserves for each task of a bulk job (fractional: the tasks mostly wait on
    #: ClickHouse and decode JSON). Live actors reserve CPUs too; a job asking more than the
    #: cluster has free waits instead of starving them.
    pipeline_task_cpus: float = Field(default=0.5, gt=0)
    #: Nice value of a bulk job's Ray Data tasks and of the command's own process
    #: (``os.nice``; the job's worker processes are its own) and of the threads of its
    #: ClickHouse statements (``os_threads_nice_value_query``: a ClickHouse server applies
    #: it; the embedded chDB does not, measured: its query threads stay at 0): on shared
    #: cores the live services' processes run first. 0: the live services' priority.
    pipeline_nice: int = Field(default=10, ge=0, le=19)
    #: Threads one ClickHouse statement of a bulk job may use (``max_threads``): the
    #: embedded engine runs in the owner actor beside the consumers' inserts.
    pipeline_clickhouse_threads: int = Field(default=1, ge=1)
    #: While live events wait for the consumers (in the PostgreSQL queue, or in the consumer
    #: group's lag on Kafka), a reprocess task
    #: pauses after each slice until none waits, for at most this many times the slice's
    #: own duration: under live load a job runs at least 1 / (1 + this) of the time, on
    #: an idle instance at full speed. Its ClickHouse statements cannot be niced in the
    #: embedded engine (``pipeline_nice``), so this is what leaves the cores to ingest.
    #: 0: never pause.
    pipeline_yield_max: float = Field(default=2.0, ge=0)
    #: Most events one export task reads from ClickHouse at once (a slice is made of whole
    #: hours up to this many events; an hour holding more is one slice). With bodies of a
    #: few KiB, 20,000 events keep a task's memory near 100 MiB.
    export_slice_events: int = Field(default=20_000, ge=1)
    #: Most events one reprocess task (``crashray reprocess``) reads and regroups at once,
    #: and the unit of its progress: an interrupted job re-runs at most one unfinished
    #: slice per task. Events are parsed into Python objects (~10 KiB each), so 20,000
    #: keep a task near 200 MiB.
    reprocess_slice_events: int = Field(default=20_000, ge=1)

    #: Events ``crashray import`` stores per PostgreSQL transaction and ClickHouse insert
    #: (and reads per processing batch). Larger batches mean fewer, larger writes; 2,000
    #: events of a few KiB keep a task's memory in the tens of MiB and a transaction short.
    import_batch_events: int = Field(default=2_000, ge=1)

    # --- raw archive (storage/archive.py; replayed by ``crashray import --archive``) ------
    #: Where ingest archives every accepted envelope item as hourly Parquet files; unset
    #: (the default): no archive. Size it as the accepted volume: about the compressed
    #: size of what SDKs send, kept until the operator removes old ``hour=…`` folders.
    archive_dir: Path | None = None
    #: A replica writes its archive buffer every this many seconds …
    archive_flush_s: float = Field(default=10.0, gt=0)
    #: … or once it holds this many items, whichever comes first.
    archive_flush_items: int = Field(default=5_000, ge=1)
    #: Items a replica keeps while the archive's disk refuses files; past it the oldest
    #: are dropped from the archive (not from processing) and logged.
    archive_max_buffer: int = Field(default=100_000, ge=1)

    def kafka(self) -> KafkaSettings | None:
        """The Kafka hand-off's settings; None when ``kafka_bootstrap`` is unset."""
        from storage.kafka import KafkaSettings

        if not self.kafka_bootstrap:
            return None
        return KafkaSettings(
            bootstrap=self.kafka_bootstrap, events_topic=self.kafka_events_topic,
            outcomes_topic=self.kafka_outcomes_topic,
            dead_letters_topic=self.kafka_dead_letters_topic,
            consumer_group=self.kafka_consumer_group, partitions=self.kafka_partitions,
            replication_factor=self.kafka_replication_factor,
            retention_ms=self.kafka_retention_ms, retention_bytes=self.kafka_retention_bytes,
            segment_bytes=self.kafka_segment_bytes,
            max_message_bytes=self.kafka_max_message_bytes, linger_ms=self.kafka_linger_ms,
            delivery_timeout_s=self.kafka_delivery_timeout_s,
            buffer_max_messages=self.kafka_buffer_max_messages,
            buffer_max_kbytes=self.kafka_buffer_max_kbytes,
            session_timeout_ms=self.kafka_session_timeout_ms)

    def api_has_own_replicas(self) -> bool:
        """Whether the Web API runs as a Serve application of its own (``api_own_replicas``;
        unset: only on a cluster)."""
        if self.api_own_replicas is not None:
            return self.api_own_replicas
        return bool(self.ray_address)

    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    def resolved_public_host(self) -> str:
        return self.public_host or self.host

    def base_url(self) -> str:
        return f"http://{self.resolved_public_host()}:{self.port}"
