//go:build !unix

package auditjournal

import (
	"errors"
	"os"
)

// Supported: without flock(2) the journal is refused (lockDir), and
// BRIDGE_AUDIT_JOURNAL=auto means none.
const Supported = false

func unlinked(*os.File) bool { return false }

// lockDir: the journal's directory lock uses flock(2); without it two
// processes could replay each other's records, so the journal is refused.
func lockDir(string) (*os.File, error) {
	return nil, errUnsupported
}

func writable(string) error { return errUnsupported }

func probeLock(string) error { return errUnsupported }

var errUnsupported = errors.New("the audit journal needs a Unix system (flock); set BRIDGE_AUDIT_JOURNAL=off")
