-- 0008: audit_patients is kept for one query, the search by patient, and
-- was three B-trees (rowid table, primary key, search index) with a foreign
-- key check per row: 73 % of an audit batch's CPU. It becomes one B-tree
-- keyed as that search reads it. Without the foreign key, PurgeAuditBefore
-- deletes a record's rows itself, through the record's patient_refs.
CREATE TABLE audit_patients_lean (
    domain          TEXT    NOT NULL,
    patient_ref     TEXT    NOT NULL,
    recorded        INTEGER NOT NULL,
    audit_id        TEXT    NOT NULL,
    PRIMARY KEY (domain, patient_ref, recorded, audit_id)
) WITHOUT ROWID;
INSERT INTO audit_patients_lean (domain, patient_ref, recorded, audit_id)
    SELECT domain, patient_ref, recorded, audit_id FROM audit_patients;
DROP TABLE audit_patients;
ALTER TABLE audit_patients_lean RENAME TO audit_patients;
