-- 0016: the patients an audit record names are a shared set, not rows of
-- their own. A worklist page's record names 100 patients, and the same
-- pages are read again and again; writing 100 rows of audit_patients per
-- read was the largest part of a page's cost (docs/audit.md). A record now
-- names its set (patient_set: sqlutil.PatientSet, a hash of the sorted
-- references), and a set's patient rows are written once, by the first
-- record that names it. The search by patient reads the records of the
-- patient's sets, and audit_patients for the records written before this
-- migration, which keep their rows there (read-only from now on).
--
-- audit_sets says which sets are complete: a set's row and its patient
-- rows are written in one transaction, and a batch writes the patient
-- rows only of the sets whose row it inserted. The retention purge deletes
-- the sets no remaining record names.
CREATE TABLE audit_sets (
    domain          TEXT    NOT NULL,
    set_id          TEXT    NOT NULL,
    patient_refs    TEXT    NOT NULL, -- the JSON array, for the purge of the rows below
    PRIMARY KEY (domain, set_id)
) WITHOUT ROWID;
CREATE TABLE audit_set_patients (
    domain          TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL,
    set_id          TEXT    NOT NULL,
    PRIMARY KEY (domain, patient_ref, set_id)
) WITHOUT ROWID;
-- NULL: the record names no patient, or was written before 0016 (its
-- patient rows are in audit_patients).
ALTER TABLE audit_events ADD COLUMN patient_set TEXT;
CREATE INDEX audit_events_patient_set ON audit_events (domain, patient_set, recorded, id)
    WHERE patient_set IS NOT NULL;
-- The staged rows of 0008 join the rest; staging is no longer needed: a
-- batch now writes a few set rows, not a hundred patient rows a record.
INSERT OR IGNORE INTO audit_patients (domain, patient_ref, recorded, audit_id)
    SELECT domain, patient_ref, recorded, audit_id FROM audit_patients_staged
    ORDER BY patient_ref, domain, recorded, audit_id;
DROP TABLE audit_patients_staged;
