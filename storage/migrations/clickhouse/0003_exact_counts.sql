-- Exactly-once derived counts. The hourly issue rollup was fed by a materialized view on
-- ``events``: a re-delivered event (a consumer killed between its ClickHouse insert and
-- its PostgreSQL commit, in whatever mix of items the next claim brings) was counted again.
-- Consumers now write the rollup and the outcomes from PostgreSQL's ``clickhouse_outbox``,
-- whose rows are committed with the queue items they count, each insert under its row's
-- ``insert_deduplication_token``. Non-replicated MergeTree tables deduplicate only within
-- ``non_replicated_deduplication_window`` (0 by default: off); 10,000 blocks outlast any
-- re-shipment (one block per consumer batch and partition, re-shipped within a lease).
-- Every insert into these tables must carry a token: with the window on, two token-less
-- inserts of identical rows would be taken for one (storage/clickhouse.py gives each a
-- token of its own).
DROP VIEW IF EXISTS issue_counts_hourly_mv;
ALTER TABLE issue_counts_hourly MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE outcomes MODIFY SETTING non_replicated_deduplication_window = 10000;
