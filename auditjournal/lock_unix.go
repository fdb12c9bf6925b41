//go:build unix

package auditjournal

import (
	"errors"
	"os"
	"syscall"
)

// Supported: the journal can lock its directory here.
const Supported = true

// unlinked reports whether f's file has been removed from its directory.
func unlinked(f *os.File) bool {
	info, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}

// lockDir takes an exclusive advisory lock on path (created if need be),
// held until the returned file is closed, or the process ends.
func lockDir(path string) (*os.File, error) {
	return lockFile(path, os.O_RDWR|os.O_CREATE)
}

// probeLock fails with ErrInUse while another process holds path's lock;
// a missing path is free.
func probeLock(path string) error {
	f, err := lockFile(path, os.O_RDWR)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close() // and with it the lock
}

// lockFile opens path with flag and takes its lock without waiting:
// ErrInUse while another process holds it.
func lockFile(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrInUse
		}
		return nil, err
	}
	return f, nil
}

// writable reports whether this process may create files in dir.
func writable(dir string) error {
	return syscall.Access(dir, 0x2) // W_OK
}
