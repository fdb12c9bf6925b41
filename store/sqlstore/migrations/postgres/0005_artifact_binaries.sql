-- A report artifact is served as a Binary (presentedForm.url) instead of
-- base64 inside the stored report: binary_id is that Binary's id, '' for
-- artifacts stored before, which stay inline in their report.
ALTER TABLE report_artifacts ADD COLUMN binary_id text NOT NULL DEFAULT '';
CREATE INDEX report_artifacts_binary ON report_artifacts (domain, binary_id, version) WHERE binary_id <> '';
