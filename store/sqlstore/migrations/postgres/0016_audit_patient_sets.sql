-- 0016: the patients an audit record names are a shared set, not rows of
-- their own. A worklist page's record names 100 patients, and the same
-- pages are read again and again; writing 100 rows of audit_patients per
-- read cost PostgreSQL 0.84-1.09 ms of CPU a page, more than the bridge's
-- whole share (docs/audit.md). A record now names its set (patient_set:
-- sqlutil.PatientSet, a hash of the sorted references), and a set's
-- patient rows are written once, by the first record that names it. The
-- search by patient reads the records of the patient's sets, and
-- audit_patients for the records written before this migration, which
-- keep their rows there (read-only from now on).
--
-- audit_sets says which sets are complete: a set's row and its patient
-- rows are written in one transaction, and a batch writes the patient
-- rows only of the sets whose row it inserted. The retention purge deletes
-- the sets no remaining record names, under an advisory lock that audit
-- batches share (store/sqlstore/audit.go says why).
CREATE TABLE audit_sets (
    domain          text        NOT NULL,
    set_id          text        NOT NULL,
    patient_refs    text        NOT NULL, -- the JSON array, for the purge of the rows below
    PRIMARY KEY (domain, set_id)
);
CREATE TABLE audit_set_patients (
    domain          text        NOT NULL,
    patient_ref     text        NOT NULL,
    set_id          text        NOT NULL,
    PRIMARY KEY (domain, patient_ref, set_id)
);
-- NULL: the record names no patient, or was written before 0016 (its
-- patient rows are in audit_patients). No default: the column is added
-- without rewriting the table.
ALTER TABLE audit_events ADD COLUMN patient_set text;
CREATE INDEX audit_events_patient_set ON audit_events (domain, patient_set, recorded, id)
    WHERE patient_set IS NOT NULL;
