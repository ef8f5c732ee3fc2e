-- The Kafka hand-off (storage/kafka.py, actors/kafka_consumer.py): per consumer group and
-- partition, the offset of the next message not yet stored. The consumer advances it in
-- the same transaction that counts a batch's events and queues its outcomes, so a
-- message read again (a consumer killed after that commit but before its Kafka commit, a
-- rebalance) is recognised as finished and counted once: what deleting the queue rows
-- does on the PostgreSQL queue. The row lock also orders two members that briefly hold
-- the same partition during a rebalance.
CREATE TABLE IF NOT EXISTS kafka_consumer_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
