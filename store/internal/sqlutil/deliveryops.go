package sqlutil

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// OpsVersion is what RequeueDelivery and AbandonDelivery decide on, read
// under the appointment queue's lock.
type OpsVersion struct {
	State, LastError string
	Purged           bool
	// Newer names a version of the appointment accepted after this one
	// ("" when none was).
	Newer string
	// Holder is the appointment's lease and LeaseUntil its end (nil when
	// no lease is recorded).
	Holder     Holder
	LeaseUntil *time.Time
}

// Abandoned reports whether lastError says an operator gave the version up.
func Abandoned(lastError string) bool {
	return strings.HasPrefix(lastError, store.DeliveryAbandoned+": ")
}

// AbandonedError is the last error of a version an operator gave up; the
// kind of the failure before it is kept, so the list still says why.
func AbandonedError(previous string) string {
	msg := store.DeliveryAbandoned + ": given up by an operator"
	if kind := (store.Delivery{LastError: previous}).LastErrorKind(); kind != "" {
		msg += " (last failure: " + kind + ")"
	}
	return msg
}

// CheckRequeue answers KindConflict unless v can be sent again.
func CheckRequeue(v OpsVersion) error {
	switch {
	case v.State != store.DeliveryFailed:
		return store.E(store.KindConflict, "version is %s, not failed", v.State)
	case Abandoned(v.LastError):
		return store.E(store.KindConflict, "version was abandoned by an operator")
	case v.Purged:
		return store.E(store.KindConflict, "retention purged the version's content: nothing is left to send")
	case v.Newer != "":
		return store.E(store.KindConflict, "%s of the same appointment was accepted since and supersedes it", v.Newer)
	}
	return nil
}

// CheckAbandon says whether v can be given up at now: noop when it was
// already, KindConflict when it cannot.
func CheckAbandon(v OpsVersion, id string, version int, now time.Time) (noop bool, err error) {
	switch v.State {
	case store.DeliveryFailed:
		return Abandoned(v.LastError), nil
	case store.DeliveryPending:
		if v.Holder.Owner != "" && v.Holder.Report == id && v.Holder.Version == version &&
			v.LeaseUntil != nil && v.LeaseUntil.After(now) {
			return false, store.E(store.KindConflict, "worker %q is delivering the version now; try again once its attempt settled", v.Holder.Owner)
		}
		return false, nil
	}
	return false, store.E(store.KindConflict, "version is %s", v.State)
}

// CheckDeliveryFilter checks f's states and returns its limit.
func CheckDeliveryFilter(f store.DeliveryFilter) (int, error) {
	for _, st := range f.States {
		if !slices.Contains([]string{store.DeliveryPending, store.DeliveryDelivered, store.DeliveryFailed, store.DeliverySuperseded}, st) {
			return 0, store.E(store.KindInvalid, "unknown delivery state %q", st)
		}
	}
	return Limit(f.Limit), nil
}

// NewerVersion names a newer version for OpsVersion.Newer.
func NewerVersion(id string, version int) string {
	return "report " + id + " version " + strconv.Itoa(version)
}
