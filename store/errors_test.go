package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestErrorKinds(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		sentinel error
		kind     store.Kind
		msg      string
	}{
		{"not found", store.E(store.KindNotFound, "no such report"), store.ErrNotFound, store.KindNotFound, "store: not found: no such report"},
		{"conflict", store.E(store.KindConflict, "exists"), store.ErrConflict, store.KindConflict, "store: conflict: exists"},
		{"precondition", store.E(store.KindPrecondition, "version is %d", 2), store.ErrPrecondition, store.KindPrecondition, "store: precondition failed: version is 2"},
		{"invalid", store.E(store.KindInvalid, "bad"), store.ErrInvalid, store.KindInvalid, "store: invalid: bad"},
		{"wrapped by fmt", fmt.Errorf("handler: %w", store.E(store.KindNotFound, "x")), store.ErrNotFound, store.KindNotFound, "handler: store: not found: x"},
	}
	all := []error{store.ErrNotFound, store.ErrConflict, store.ErrPrecondition, store.ErrInvalid}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.kind, store.KindOf(tt.err))
			assert.Equal(t, tt.msg, tt.err.Error())
			for _, s := range all {
				assert.Equal(t, s == tt.sentinel, errors.Is(tt.err, s), "errors.Is(%v, %v)", tt.err, s)
			}
		})
	}
	assert.Equal(t, store.KindInternal, store.KindOf(errors.New("boom")))
	assert.Equal(t, "kind(42)", store.Kind(42).String())
}

func TestWrap(t *testing.T) {
	fail := func(err error) (out error) {
		defer store.Wrap(&out, "sqlite.Report(%q, %q)", "acme", "r1")
		return err
	}
	assert.NoError(t, fail(nil))

	err := fail(store.E(store.KindNotFound, "no such report"))
	assert.Equal(t, `sqlite.Report("acme", "r1"): not found: no such report`, err.Error())
	assert.ErrorIs(t, err, store.ErrNotFound)

	// A cause that is not an *Error becomes internal but stays matchable.
	err = fail(context.Canceled)
	assert.Equal(t, store.KindInternal, store.KindOf(err))
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, `sqlite.Report("acme", "r1"): internal: context canceled`, err.Error())

	// An *Error that already has its operation keeps it.
	inner := fail(store.E(store.KindConflict, "x"))
	assert.Equal(t, inner.Error(), fail(inner).Error())

	// Sentinels are never modified.
	_ = fail(store.ErrNotFound)
	assert.Empty(t, store.ErrNotFound.Op)
}
