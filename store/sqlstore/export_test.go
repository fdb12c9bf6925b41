package sqlstore

// SetAuditMoveAt makes s move staged audit patient rows into
// audit_patients once n have gathered, so that tests cover both tables.
// s must stage them (SQLite).
func SetAuditMoveAt(s *Store, n int) {
	g := s.d.auditStaging()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.moveAt = n
}

// ReservePaddings is how many times s's ReserveArtifactSpace padded the
// table.
func ReservePaddings(s *Store) int {
	s.reserve.mu.Lock()
	defer s.reserve.mu.Unlock()
	return s.reserve.paddings
}
