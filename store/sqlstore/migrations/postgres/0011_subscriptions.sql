-- 0011: FHIR Subscriptions and their notification outbox (see the SQLite
-- file of the same number). The dispatcher row is locked FOR UPDATE SKIP
-- LOCKED by the replica that dispatches, so one replica at a time does.
CREATE TABLE subscriptions (
    domain              TEXT        NOT NULL,
    id                  TEXT        NOT NULL,
    status              TEXT        NOT NULL,
    topic               TEXT        NOT NULL,
    criteria            TEXT        NOT NULL,
    endpoint            TEXT        NOT NULL,
    content             TEXT        NOT NULL,
    headers             TEXT        NOT NULL,
    heartbeat_ms        BIGINT      NOT NULL,
    timeout_ms          BIGINT      NOT NULL,
    max_count           INTEGER     NOT NULL,
    resource            BYTEA       NOT NULL,
    start_seq           BIGINT      NOT NULL,
    events_since_start  BIGINT      NOT NULL DEFAULT 0,
    delivered_through   BIGINT      NOT NULL DEFAULT 0,
    error               TEXT        NOT NULL DEFAULT '',
    attempts            INTEGER     NOT NULL DEFAULT 0,
    failing_since       TIMESTAMPTZ,
    retry_at            TIMESTAMPTZ,
    heartbeat_at        TIMESTAMPTZ,
    last_sent_at        TIMESTAMPTZ,
    claimed_at          TIMESTAMPTZ NOT NULL,
    lease_owner         TEXT,
    lease_until         TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (domain, id)
);

CREATE TABLE subscription_dispatch (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    watermark   BIGINT NOT NULL
);
INSERT INTO subscription_dispatch (id, watermark) VALUES (1, 0);

CREATE TABLE subscription_notifications (
    domain          TEXT        NOT NULL,
    subscription_id TEXT        NOT NULL,
    event_number    BIGINT      NOT NULL,
    event_seq       BIGINT      NOT NULL,
    sent_at         TIMESTAMPTZ,
    PRIMARY KEY (domain, subscription_id, event_number)
);
