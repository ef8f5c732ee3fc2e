"""Quotas, key rate limits, spike-protection settings and rate-limit counters (PostgreSQL).

Every read is scoped to one organization: the rate limiter asks for an organization's
quotas, and the management API and CLI name the organization they act in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from events.quotas import Quota, key_rate_limit_quota


def organization_quotas(conn: psycopg.Connection[Any], organization_id: int) -> list[Quota]:
    """The organization's quotas and its keys' rate limits."""
    rows = conn.execute(
        "SELECT id, scope, scope_id, categories, window_s, quota_limit, reason_code"
        " FROM quotas WHERE organization_id = %s ORDER BY id", (organization_id,)).fetchall()
    quotas = [Quota(f"q{r[0]}", organization_id, str(r[1]), r[2], frozenset(r[3]), r[5],
                    int(r[4]), str(r[6])) for r in rows]
    keys = conn.execute(
        "SELECT k.id, k.rate_limit_count, k.rate_limit_window_s FROM project_keys k"
        " JOIN projects p ON p.id = k.project_id WHERE p.organization_id = %s"
        " AND k.rate_limit_count IS NOT NULL AND k.rate_limit_window_s > 0",
        (organization_id,)).fetchall()
    quotas.extend(key_rate_limit_quota(organization_id, int(k[0]), int(k[1]), int(k[2]))
                  for k in keys)
    return quotas


def add_quota(conn: psycopg.Connection[Any], quota: Quota) -> int:
    """Store a (validated) quota of ``quota.organization_id``; returns its id."""
    row = conn.execute(
        "INSERT INTO quotas (organization_id, scope, scope_id, categories, window_s,"
        " quota_limit, reason_code) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (quota.organization_id, quota.scope, quota.scope_id, sorted(quota.categories),
         quota.window_s, quota.limit, quota.reason_code)).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class StoredQuota:
    id: int
    quota: Quota


def list_quotas(conn: psycopg.Connection[Any], organization_id: int) -> list[StoredQuota]:
    rows = conn.execute(
        "SELECT id, scope, scope_id, categories, window_s, quota_limit, reason_code"
        " FROM quotas WHERE organization_id = %s ORDER BY id", (organization_id,)).fetchall()
    return [StoredQuota(int(r[0]), Quota(f"q{r[0]}", organization_id, str(r[1]), r[2],
                                         frozenset(r[3]), r[5], int(r[4]), str(r[6])))
            for r in rows]


def delete_quota(conn: psycopg.Connection[Any], organization_id: int, quota_id: int) -> bool:
    cur = conn.execute("DELETE FROM quotas WHERE organization_id = %s AND id = %s",
                       (organization_id, quota_id))
    return cur.rowcount == 1


def scope_belongs(conn: psycopg.Connection[Any], organization_id: int, scope: str,
                  scope_id: int | None) -> bool:
    """Whether the project or key ``scope_id`` is the organization's (tenant check)."""
    if scope_id is None or scope == "organization":
        return scope_id in (None, organization_id)
    sql = {"project": "SELECT 1 FROM projects WHERE organization_id = %s AND id = %s",
           "key": "SELECT 1 FROM project_keys k JOIN projects p ON p.id = k.project_id"
                  " WHERE p.organization_id = %s AND k.id = %s"}[scope]
    return conn.execute(sql, (organization_id, scope_id)).fetchone() is not None


def load_counters(conn: psycopg.Connection[Any], now: dt.datetime
                  ) -> dict[tuple[str, int], int]:
    """Counters of windows that have not ended, as a restarted rate limiter needs them."""
    rows = conn.execute("SELECT counter, slot, count FROM quota_counters"
                        " WHERE expires_at > %s", (now,)).fetchall()
    return {(str(r[0]), int(r[1])): int(r[2]) for r in rows}


def spike_history(conn: psycopg.Connection[Any], counter: str, slots: Sequence[int]
                  ) -> dict[int, int]:
    rows = conn.execute("SELECT slot, count FROM quota_counters WHERE counter = %s"
                        " AND slot = ANY(%s)", (counter, list(slots))).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def add_to_counters(conn: psycopg.Connection[Any], increments: Mapping[tuple[str, int], int],
                    expires_at: Mapping[tuple[str, int], float]) -> None:
    if not increments:
        return
    keys = sorted(increments)  # one lock order for concurrent writers
    # psycopg refuses a list that mixes int and float, and the window ends do: a window's
    # is an int, a lease return's for a window this process has not seen yet (a rate
    # limiter just restarted) is the float ``now``.
    conn.execute(
        "INSERT INTO quota_counters (counter, slot, count, expires_at)"
        " SELECT c, s, n, to_timestamp(e) FROM unnest(%s::text[], %s::bigint[], %s::bigint[],"
        " %s::double precision[]) AS v(c, s, n, e)"
        " ON CONFLICT (counter, slot) DO UPDATE"
        " SET count = quota_counters.count + excluded.count",
        ([k[0] for k in keys], [k[1] for k in keys], [int(increments[k]) for k in keys],
         [float(expires_at[k]) for k in keys]))


def prune_counters(conn: psycopg.Connection[Any], keep_spike_s: float) -> int:
    """Forget ended windows (spike-protection history after ``keep_spike_s``)."""
    cur = conn.execute(
        "DELETE FROM quota_counters WHERE (counter NOT LIKE 'spike:%%' AND expires_at < now())"
        " OR expires_at < now() - make_interval(secs => %s)", (keep_spike_s,))
    return cur.rowcount


@dataclass(frozen=True)
class CounterUsage:
    counter: str
    slot: int
    count: int
    expires_at: dt.datetime


def current_usage(conn: psycopg.Connection[Any], organization_id: int
                  ) -> list[CounterUsage]:
    """The organization's counters of windows still running (for ``crashray quota usage``)."""
    rows = conn.execute(
        "SELECT counter, slot, count, expires_at FROM quota_counters"
        " WHERE counter LIKE %s AND expires_at > now() ORDER BY counter",
        (f"%:{organization_id}:%",)).fetchall()
    return [CounterUsage(str(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows
            if str(r[0]).split(":")[1] == str(organization_id)]
