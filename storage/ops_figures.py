"""Instance-wide figures for operators' metrics (actors/metrics_sampler.py): never per
tenant, never on a request path."""

from __future__ import annotations

from typing import Any

import psycopg


def dead_letter_totals(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Dead letters of the whole instance per item type (a handful of types; the table
    is small: items that failed on their own, until replayed or dropped)."""
    rows = conn.execute("SELECT item_type, count(*) FROM ingest_dead_letters"
                        " GROUP BY item_type").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}
