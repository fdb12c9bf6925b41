-- Nothing to change on SQLite: it never compresses values. This number
-- keeps both engines' migrations in step (PostgreSQL's 0007 stores artifact
-- bytes uncompressed).
SELECT 1;
