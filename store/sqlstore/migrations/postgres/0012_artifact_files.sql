-- SQLite's 0012 moves artifact bytes into files beside its database. On
-- PostgreSQL they stay in report_artifacts.data (several replicas share
-- the database, not a directory): the column exists so that both engines
-- share their queries, and stays NULL.
ALTER TABLE report_artifacts ADD COLUMN data_file text;
