-- 0009: the event log (see the SQLite file of the same number for why).
-- Writers take a transaction-scoped advisory lock before appending
-- (sqlstore/events.go), so seqs are committed in the order they are
-- handed out and a reader after seq N never misses a row committed later
-- with a smaller seq.
CREATE TABLE events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain          TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    kind            TEXT        NOT NULL,
    focus_type      TEXT        NOT NULL,
    focus_id        TEXT        NOT NULL,
    appointment_id  TEXT        NOT NULL DEFAULT '',
    at              TIMESTAMPTZ NOT NULL,
    resource        BYTEA
);
CREATE INDEX events_at ON events (at);
