-- 0014: the comment watch (docs/subscriptions.md, "Comments"). QUBS has no
-- "comments changed since" feed, so the bridge polls each study's comments
-- and remembers what it saw. Ids and times only, no comment text: nothing
-- here is PHI.
--
-- Per domain: who watches it (a lease, as worklist_sync), when the current
-- watch began (comments older than that are the baseline, not news) and
-- when a watcher was last active (a watch idle for longer than ten leases
-- begins anew).
CREATE TABLE comment_watch (
    domain       TEXT PRIMARY KEY,
    owner        TEXT    NOT NULL DEFAULT '',
    lease_until  INTEGER,
    began        INTEGER,
    active_at    INTEGER
);
-- Per study: when its comments were last polled (the round robin's order).
CREATE TABLE comment_studies (
    domain         TEXT    NOT NULL,
    appointment_id TEXT    NOT NULL,
    polled_at      INTEGER NOT NULL,
    PRIMARY KEY (domain, appointment_id)
);
-- Per comment or alert (by QUBS guid, per domain: a patient's comment shows
-- through each of the patient's studies and is news once): its
-- lastModifiedDateTime as last seen, the study it was first seen through
-- and when it was last seen (retention forgets what has not been seen for
-- BRIDGE_RETENTION).
CREATE TABLE comment_seen (
    domain         TEXT    NOT NULL,
    guid           TEXT    NOT NULL,
    appointment_id TEXT    NOT NULL,
    modified       INTEGER,
    seen_at        INTEGER NOT NULL,
    PRIMARY KEY (domain, guid)
);
CREATE INDEX comment_seen_at ON comment_seen (seen_at);
