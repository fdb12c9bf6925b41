package sqlite

// SetAuditMoveAt makes s move staged audit patient rows into
// audit_patients once n have gathered, so that tests cover both tables.
func SetAuditMoveAt(s *Store, n int) { s.audit.moveAt = n }
