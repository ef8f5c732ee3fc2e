-- Alert notifications (issue 13; storage/notifications.py, actors/notifier.py).
--
-- notification_deliveries is a durable outbox: the consumer's batch transaction inserts a
-- row per (fired rule action, destination), so a notification exists exactly when the
-- batch that caused it committed. The notifier claims rows (FOR UPDATE SKIP LOCKED, a
-- lease in claimed_until: a crashed notifier's claims come back after it), sends, and
-- records the outcome here, which is also the delivery log the API and dashboard show.
-- issue_id and rule_id carry no foreign key: the log outlives a deleted rule or a merged
-- issue (Sentry keeps its notification history the same way).
CREATE TABLE notification_deliveries (
    id                 bigserial PRIMARY KEY,
    organization_id    bigint NOT NULL,
    project_id         bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    rule_id            bigint,
    issue_id           bigint,
    event_id           text,
    -- The rule's action item ({"id": "<action class>", ...fields}) as the rule had it.
    action             jsonb NOT NULL,
    -- Where this row goes: "webhook:<url>", "slack:<url>", "email:<a>,<b>" (one row per
    -- webhook plugin URL); the key of notification_destination_health.
    destination        text NOT NULL,
    -- What the notifier renders (events/notify.py delivery_payload).
    payload            jsonb NOT NULL,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    claimed_until      timestamptz,
    last_error         text,
    last_response_code integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    delivered_at       timestamptz
);

-- Claiming: due rows among the unfinished ones (a small set; delivered and failed rows
-- are most of the table and stay out of this index).
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'sending');
-- The delivery log, newest first, per project and per rule.
CREATE INDEX notification_deliveries_project_log
    ON notification_deliveries (organization_id, project_id, created_at DESC, id DESC);
CREATE INDEX notification_deliveries_rule_log
    ON notification_deliveries (organization_id, project_id, rule_id, created_at DESC, id DESC)
    WHERE rule_id IS NOT NULL;
-- Retention of delivered rows (CRASHRAY_NOTIFY_RETENTION_DAYS).
CREATE INDEX notification_deliveries_delivered ON notification_deliveries (delivered_at)
    WHERE status = 'delivered';

-- Sentry's legacy WebHooks plugin per project: the URLs that
-- ``PUT /api/0/projects/{org}/{project}/plugins/webhooks/`` with {"urls": "one per line"}
-- sets, and which the action NotifyEventServiceAction (service "webhooks") posts to.
CREATE TABLE project_webhook_plugins (
    project_id      bigint PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    organization_id bigint NOT NULL,
    urls            text[] NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Health of each destination of a project: failed attempts in a row (a success resets
-- it). At CRASHRAY_NOTIFY_FAILURE_WARNING_THRESHOLD the project shows a warning, so a
-- destination that keeps failing is never silent.
CREATE TABLE notification_destination_health (
    project_id           bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    organization_id      bigint NOT NULL,
    destination          text NOT NULL,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error           text,
    last_response_code   integer,
    last_failure_at      timestamptz,
    last_success_at      timestamptz,
    PRIMARY KEY (project_id, destination)
);
