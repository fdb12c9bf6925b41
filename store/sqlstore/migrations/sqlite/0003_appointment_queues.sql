-- 0003: the delivery queue is ordered and leased per QUBS appointment, not
-- per report. QUBS keeps one report per appointment and every submission
-- overwrites it, so two DiagnosticReports for one appointment overwrite
-- each other in QUBS like two versions of one report: they must share one
-- queue and one lease. docs/store.md explains the queue.
--
-- Not a rolling upgrade: a replica of an older release still leases and
-- supersedes per report (reports.queue_due_at and lease columns, which
-- this migration empties and nothing reads any more) and queues versions
-- without a queue_seq. Stop older replicas before starting this one.

-- One row per (domain, appointment) that ever had a report version: the
-- head of its delivery queue and its lease. Locking this row (the write
-- lock here, FOR UPDATE on PostgreSQL) serialises everything that changes
-- the appointment's queue: new versions, claims, completions.
CREATE TABLE delivery_queues (
    domain          TEXT    NOT NULL,
    appointment_id  TEXT    NOT NULL,
    accepted        INTEGER NOT NULL DEFAULT 0, -- the last queue_seq handed out
    due_at          INTEGER,          -- next_attempt_at of the newest pending version; NULL: nothing to deliver
    leased_report   TEXT,             -- the version a worker holds (report id, version), with the lease below
    leased_version  INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    PRIMARY KEY (domain, appointment_id)
);
CREATE INDEX delivery_queues_due ON delivery_queues (due_at) WHERE due_at IS NOT NULL;

-- The acceptance order of a version within its appointment: 1, 2, ...
-- handed out under the queue row's lock, so it is also commit order.
ALTER TABLE report_versions ADD COLUMN queue_seq INTEGER;

-- Number the versions already there by creation time, but never a version
-- before an older one of its report (the running maximum keeps each
-- report's versions in order even if a caller's clock went backwards).
WITH accepted AS (
    SELECT domain, report_id, version, appointment_id,
        max(created_at) OVER (PARTITION BY domain, report_id ORDER BY version) AS at
    FROM report_versions
), numbered AS (
    SELECT domain, report_id, version,
        row_number() OVER (PARTITION BY domain, appointment_id ORDER BY at, report_id, version) AS seq
    FROM accepted
)
UPDATE report_versions SET queue_seq = numbered.seq
FROM numbered
WHERE report_versions.domain = numbered.domain AND report_versions.report_id = numbered.report_id
    AND report_versions.version = numbered.version;

CREATE UNIQUE INDEX report_versions_queue ON report_versions (domain, appointment_id, queue_seq);
CREATE INDEX report_versions_queue_pending ON report_versions (domain, appointment_id, queue_seq) WHERE state = 'pending';

INSERT INTO delivery_queues (domain, appointment_id, accepted, due_at)
SELECT v.domain, v.appointment_id, max(v.queue_seq),
    (SELECT p.next_attempt_at FROM report_versions p
        WHERE p.domain = v.domain AND p.appointment_id = v.appointment_id AND p.state = 'pending'
        ORDER BY p.queue_seq DESC LIMIT 1)
FROM report_versions v
GROUP BY v.domain, v.appointment_id;

-- Leases held when the old release stopped move to their appointment (the
-- longest one, should two reports of one appointment both be leased), so
-- no job is taken over before its lease ends.
UPDATE delivery_queues SET (leased_report, leased_version, lease_owner, lease_until) = (
    SELECT r.id, r.leased_version, r.lease_owner, r.lease_until
    FROM reports r JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.leased_version
    WHERE v.domain = delivery_queues.domain AND v.appointment_id = delivery_queues.appointment_id
        AND v.state = 'pending' AND r.lease_until IS NOT NULL
    ORDER BY r.lease_until DESC, r.id LIMIT 1);

UPDATE reports SET queue_due_at = NULL, leased_version = NULL, lease_owner = NULL, lease_until = NULL;
