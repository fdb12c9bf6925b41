-- Run once by the postgres image when its volume is empty (compose.yaml):
-- the bridge's tables go into a schema of their own, the first of the
-- default search_path ("$user", public) for the role bridge, so that
-- pg_dump --schema=bridge backs up exactly the bridge (docs/operations.md).
CREATE SCHEMA bridge AUTHORIZATION bridge;
