-- Placeholder: number 0014 belongs to a migration of another branch, written at the
-- same time as 0016. Delete this file when that branch is merged.
SELECT 1;
