-- 0008: audit_patients is kept for one query, the search by patient, and
-- was a heap with two indexes (primary key, search) and a foreign key check
-- per row. It keeps one index, keyed as that search reads it. Without the
-- foreign key, PurgeAuditBefore deletes a record's rows itself, through the
-- record's patient_refs.
CREATE TABLE audit_patients_lean (
    domain          text        NOT NULL,
    patient_ref     text        NOT NULL,
    recorded        timestamptz NOT NULL,
    audit_id        text        NOT NULL,
    CONSTRAINT audit_patients_search_key PRIMARY KEY (domain, patient_ref, recorded, audit_id)
);
INSERT INTO audit_patients_lean (domain, patient_ref, recorded, audit_id)
    SELECT domain, patient_ref, recorded, audit_id FROM audit_patients;
DROP TABLE audit_patients;
ALTER TABLE audit_patients_lean RENAME TO audit_patients;
