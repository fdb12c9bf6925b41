-- Artifact and Binary bytes (PDFs, DICOM SR) are stored as they are, never
-- compressed: their bulk is compressed streams already, but a PDF starts
-- with text, so pglz finds matches in its first kilobyte and then
-- compresses the whole 2 MiB before finding it saves nothing (measured:
-- an insert of such a value 172 ms with the default storage, 44 ms with
-- EXTERNAL). EXTERNAL still stores them out of line, in TOAST chunks.
-- It applies to rows written from now on; rows already stored keep their
-- form and read the same.
ALTER TABLE report_artifacts ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE binaries ALTER COLUMN data SET STORAGE EXTERNAL;
