-- 0016: the patients an audit record names are a shared set, not rows of
-- their own. A worklist page's record names 100 patients, and the same
-- pages are read again and again; writing 100 rows of audit_patients per
-- read was the largest part of a page's cost (docs/audit.md). A record now
-- names its set (patient_set: sqlutil.PatientSet, a hash of the sorted
-- references), and a set's patient rows are written once, by the first
-- record that names it. The search by patient reads the records of the
-- patient's sets, and audit_patients (with its staged rows) for the
-- records written before this migration and those naming one patient.
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
-- A record naming one patient (a read) names no set here: its patient row
-- is still staged (0008) and moved into audit_patients, which SQLite's WAL
-- writes a page at a time far more cheaply than an index entry per read
-- (docs/audit.md). So patient_set is NULL for it too.
