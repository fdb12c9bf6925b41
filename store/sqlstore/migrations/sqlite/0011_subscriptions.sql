-- 0011: FHIR Subscriptions (R4 Backport IG, topic-based, rest-hook) and
-- their notification outbox; docs/subscriptions.md and docs/store.md.
CREATE TABLE subscriptions (
    domain              TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    status              TEXT    NOT NULL, -- requested, active, error, off
    topic               TEXT    NOT NULL, -- the event topic (store.EventTopic...)
    criteria            TEXT    NOT NULL, -- JSON array of filter criteria
    endpoint            TEXT    NOT NULL,
    content             TEXT    NOT NULL, -- empty, id-only, full-resource
    headers             TEXT    NOT NULL, -- JSON array of "Name: value"; secret
    heartbeat_ms        INTEGER NOT NULL,
    timeout_ms          INTEGER NOT NULL,
    max_count           INTEGER NOT NULL,
    resource            BLOB    NOT NULL, -- the Subscription as accepted, headers redacted
    start_seq           INTEGER NOT NULL, -- events up to this seq predate it
    events_since_start  INTEGER NOT NULL DEFAULT 0, -- the last eventNumber handed out
    delivered_through   INTEGER NOT NULL DEFAULT 0, -- the last eventNumber the endpoint took
    error               TEXT    NOT NULL DEFAULT '',
    attempts            INTEGER NOT NULL DEFAULT 0, -- consecutive failed attempts
    failing_since       INTEGER,
    retry_at            INTEGER,
    heartbeat_at        INTEGER,
    last_sent_at        INTEGER,
    claimed_at          INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_until         INTEGER,
    created_at          INTEGER NOT NULL,
    PRIMARY KEY (domain, id)
);

-- The dispatcher's watermark: the last event seq matched against the
-- subscriptions. One row; advanced in the transaction that writes the
-- notifications of the events it passes.
CREATE TABLE subscription_dispatch (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    watermark   INTEGER NOT NULL
);
INSERT INTO subscription_dispatch (id, watermark) VALUES (1, 0);

-- The outbox: one row per (subscription, eventNumber), numbers 1, 2, ...
-- without gaps; the event itself is read from events by seq.
CREATE TABLE subscription_notifications (
    domain          TEXT    NOT NULL,
    subscription_id TEXT    NOT NULL,
    event_number    INTEGER NOT NULL,
    event_seq       INTEGER NOT NULL,
    sent_at         INTEGER,
    PRIMARY KEY (domain, subscription_id, event_number)
);
