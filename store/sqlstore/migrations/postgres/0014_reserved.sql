-- Placeholder: number 0014 belongs to the comment watch's migration, written at the
-- same time on another branch. Replaced when that branch is merged.
SELECT 1;
