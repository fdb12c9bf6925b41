-- 0009: the event log. What subscribers may be told (a study arrived in,
-- changed in or left the worklist; a report's delivery ended; a comment
-- arrived) is appended here in the transaction that makes it true, so an
-- event is never lost nor invented by a crash between the change and its
-- record. seq orders the log: the subscription dispatcher reads it after
-- the last seq it handled. AUTOINCREMENT so that a seq is never reused,
-- even after the newest rows are deleted.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    domain          TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    focus_type      TEXT    NOT NULL,
    focus_id        TEXT    NOT NULL,
    appointment_id  TEXT    NOT NULL DEFAULT '',
    at              INTEGER NOT NULL,
    -- The focus resource as it was (FHIR JSON; PHI), NULL when not kept
    -- or purged by retention.
    resource        BLOB
);
CREATE INDEX events_at ON events (at);
