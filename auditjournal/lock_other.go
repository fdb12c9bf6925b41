//go:build !unix

package auditjournal

import (
	"errors"
	"os"
)

// lockDir: the journal's directory lock uses flock(2); without it two
// processes could replay each other's records, so the journal is refused.
func lockDir(string) (*os.File, error) {
	return nil, errors.New("the audit journal needs a Unix system (flock); set BRIDGE_AUDIT_JOURNAL=off")
}
