"""The Kafka consumers' stored offsets in PostgreSQL (migration 0031): per consumer group
and partition, the offset of the next message not yet stored.

On the PostgreSQL queue a batch's transaction deletes its queue rows, and a row already
deleted tells a consumer that another one finished the item. On Kafka the messages stay;
this table plays that part: the batch's transaction locks its partitions' rows, keeps the
messages at or past the stored offset (the others were finished by an earlier transaction:
a consumer killed after its commit but before its Kafka commit, or a member that held the
partition before a rebalance) and advances the offset, all in the transaction that counts
the events and queues the outcomes. So a message read twice is counted once, whatever it
holds (events, sessions, outcome tallies), and Kafka's own committed offset only says where
a member starts reading (never past what is stored here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

Partition = tuple[str, int]


def advance_offsets(conn: psycopg.Connection[Any], consumer_group: str,
                    last_offsets: Mapping[Partition, int],
                    reset_to: Mapping[Partition, int]) -> dict[Partition, int]:
    """Inside the caller's transaction: lock the rows of ``last_offsets``' partitions (in
    one order, so two members never deadlock), set the offsets of ``reset_to``'s partitions
    first (the partition was read again from an earlier offset: its log was recreated or
    truncated), then advance each stored offset past the last one given. Returns each
    partition's stored offset as it was before this call (0 when none was stored): the
    messages at or past it are this transaction's to store."""
    keys = sorted(last_offsets)
    if not keys:
        return {}
    topics, partitions = [k[0] for k in keys], [k[1] for k in keys]
    conn.execute(
        "INSERT INTO kafka_consumer_offsets (consumer_group, topic, partition, next_offset)"
        " SELECT %s, t, p, 0 FROM unnest(%s::text[], %s::integer[]) AS u(t, p)"
        " ORDER BY t, p ON CONFLICT DO NOTHING", (consumer_group, topics, partitions))
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM kafka_consumer_offsets"
        " WHERE consumer_group = %s AND (topic, partition) IN"
        " (SELECT * FROM unnest(%s::text[], %s::integer[]))"
        " ORDER BY topic, partition FOR UPDATE", (consumer_group, topics, partitions)
    ).fetchall()
    before = {(str(r[0]), int(r[1])): int(r[2]) for r in rows}
    for key, offset in reset_to.items():
        if key in before:
            before[key] = offset
    conn.execute(
        "UPDATE kafka_consumer_offsets o SET next_offset = u.next, updated_at = now()"
        " FROM unnest(%s::text[], %s::integer[], %s::bigint[]) AS u(t, p, next)"
        " WHERE o.consumer_group = %s AND o.topic = u.t AND o.partition = u.p",
        (topics, partitions, [max(before[k], last_offsets[k] + 1) for k in keys],
         consumer_group))
    return before


def stored_offsets(conn: psycopg.Connection[Any], consumer_group: str
                   ) -> dict[Partition, int]:
    """Every partition's stored offset for ``consumer_group`` (for operators and tests)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM kafka_consumer_offsets"
            " WHERE consumer_group = %s", (consumer_group,)).fetchall()
    return {(str(r[0]), int(r[1])): int(r[2]) for r in rows}
