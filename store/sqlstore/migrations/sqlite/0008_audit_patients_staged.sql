-- 0008: a batch of audit records no longer writes its patient rows into
-- audit_patients' B-tree directly. A worklist page names 100 patients, each
-- on another leaf of that tree, and a commit wrote every leaf it touched
-- (4 KiB) to the WAL for the row or two added to it: with more active
-- patients than the page cache holds, most of an audit batch's CPU went
-- into those writes and re-reads. The rows are appended here instead (a
-- rowid table: one hot leaf), and moved into audit_patients in key order
-- when enough have gathered, each leaf then written once for many rows.
-- The search by patient reads both tables, so it stays exact; a move is
-- one transaction, so a row is always in exactly one of them. Not indexed
-- by patient on purpose: it stays small (docs/audit.md).
CREATE TABLE audit_patients_staged (
    domain          TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL,
    recorded        INTEGER NOT NULL,
    audit_id        TEXT    NOT NULL
);
