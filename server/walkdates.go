package server

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// walkDates are the date parameters of a search that walks QUBS (the
// index off): the very conditions the index is queried with, evaluated
// on the date columns the index would hold for each appointment
// (worklist.Dates). A date's meaning (a site's local day, an open start,
// a daylight-saving hour) is then decided in one place, and a search
// answers alike with the index on or off.
type walkDates struct {
	where []store.WorklistClause
}

// parseWalkDates reads the parameters of q that params names (date
// parameters of the row's own dates: occurrence, started).
func parseWalkDates(q *fhir.Query, params []indexedParam, names ...string) (*walkDates, error) {
	params = slices.DeleteFunc(slices.Clone(params), func(p indexedParam) bool { return !slices.Contains(names, p.name) })
	where, err := indexedWhere(q, params)
	if err != nil {
		return nil, err
	}
	return &walkDates{where: where}, nil
}

// filtered reports whether there is anything to match; a nil walkDates
// (a view without dates of its own, Task) has nothing.
func (w *walkDates) filtered() bool { return w != nil && len(w.where) > 0 }

// match reports whether m's date columns meet every clause: one of its
// alternatives, each condition of which holds.
func (w *walkDates) match(m *mapping.Mapped) bool {
	if !w.filtered() {
		return true
	}
	r := worklist.Dates(m)
	for _, clause := range w.where {
		if !slices.ContainsFunc(clause, func(alt []store.WorklistCond) bool {
			return !slices.ContainsFunc(alt, func(c store.WorklistCond) bool { return !condHolds(&r, c) })
		}) {
			return false
		}
	}
	return true
}

// condHolds evaluates c on r as the store's SQL does: a missing time or
// wall clock is NULL (no comparison holds). Only the fields date
// parameters compare are known.
func condHolds(r *store.WorklistRow, c store.WorklistCond) bool {
	var at *time.Time
	switch c.Field {
	case store.WorklistFieldOccurrenceStart:
		at = r.OccurrenceStart
	case store.WorklistFieldOccurrenceEnd:
		at = r.OccurrenceEnd
	case store.WorklistFieldStartedStart:
		at = r.StartedStart
	case store.WorklistFieldStartedEnd:
		at = r.StartedEnd
	case store.WorklistFieldOccurrenceLocalStart:
		return nullableHolds(r.OccurrenceLocalStart, c)
	case store.WorklistFieldOccurrenceLocalEnd:
		return nullableHolds(r.OccurrenceLocalEnd, c)
	case store.WorklistFieldStartedLocalStart:
		return nullableHolds(r.StartedLocalStart, c)
	case store.WorklistFieldStartedLocalEnd:
		return nullableHolds(r.StartedLocalEnd, c)
	case store.WorklistFieldRowFormat:
		// A row built now is of the format the store writes now.
		v, ok := c.Value.(int)
		return ok && compares(cmp.Compare(store.WorklistRowFormat, v), c.Op)
	default:
		return false
	}
	switch v, ok := c.Value.(time.Time); {
	case c.Op == "null":
		return at == nil
	case c.Op == "notnull":
		return at != nil
	case ok && at != nil:
		return compares(at.Compare(v), c.Op)
	}
	return false
}

// nullableHolds evaluates c on a text column that is NULL for none ("" in
// the row): no comparison holds for none.
func nullableHolds(s string, c store.WorklistCond) bool {
	switch v, ok := c.Value.(string); {
	case c.Op == "null":
		return s == ""
	case c.Op == "notnull":
		return s != ""
	case ok && s != "":
		return compares(strings.Compare(s, v), c.Op)
	}
	return false
}

// compares reports whether a comparison's result cmp satisfies op.
func compares(cmp int, op string) bool {
	switch op {
	case "=":
		return cmp == 0
	case "<>":
		return cmp != 0
	case "<":
		return cmp < 0
	case "<=":
		return cmp <= 0
	case ">":
		return cmp > 0
	case ">=":
		return cmp >= 0
	}
	return false
}
