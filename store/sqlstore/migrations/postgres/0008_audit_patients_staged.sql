-- Nothing to change on PostgreSQL: its audit patient rows go into
-- audit_patients directly (docs/store.md, "Audit trail", says why). This
-- number keeps both engines' migrations in step (SQLite's 0008 stages them).
SELECT 1;
