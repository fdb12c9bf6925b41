-- The bridge keeps comments and documents in QUBS only: it never wrote these
-- tables, and their rows (if any) hold PHI with no reader.
DROP TABLE IF EXISTS communications;
DROP TABLE IF EXISTS document_references;
