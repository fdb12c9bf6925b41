package mapping

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// localInstantSearch is localInstant without its shortcut: every
// candidate offset tried. The shortcut must agree with it everywhere.
func localInstantSearch(loc *time.Location, y int, mo time.Month, d, h, mi, s int) int {
	wall := time.Date(y, mo, d, h, mi, s, 0, time.UTC).Unix()
	guess := time.Date(y, mo, d, h, mi, s, 0, loc)
	_, o0 := guess.Zone()
	candidates := [3]int{o0, o0, o0}
	start, end := guess.ZoneBounds()
	if !start.IsZero() {
		_, candidates[1] = start.Add(-time.Second).In(loc).Zone()
	}
	if !end.IsZero() {
		_, candidates[2] = end.In(loc).Zone()
	}
	best, found := 0, false
	lowest := candidates[0]
	for _, o := range candidates {
		lowest = min(lowest, o)
		if _, got := time.Unix(wall-int64(o), 0).In(loc).Zone(); got != o {
			continue
		}
		if !found || o > best {
			best, found = o, true
		}
	}
	if !found {
		best = lowest
	}
	return best
}

func TestLocalInstantShortcut(t *testing.T) {
	zones := []string{"Australia/Sydney", "Australia/Adelaide", "Australia/Perth", "Australia/Lord_Howe",
		"Pacific/Chatham", "America/New_York", "Europe/London", "Pacific/Apia", "America/St_Johns"}
	years := [][2]int{{1890, 1896}, {1915, 1918}, {1970, 1972}, {2010, 2012}, {2024, 2027}}
	if testing.Short() {
		years = years[3:]
	}
	for _, name := range zones {
		loc, err := time.LoadLocation(name)
		require.NoError(t, err)
		for _, yy := range years {
			for d := time.Date(yy[0], 1, 1, 0, 0, 0, 0, time.UTC); d.Year() < yy[1]; d = d.Add(37 * time.Minute) {
				y, mo, dd := d.Date()
				h, mi, s := d.Clock()
				require.Equal(t, localInstantSearch(loc, y, mo, dd, h, mi, s), localInstant(loc, y, mo, dd, h, mi, s),
					"%s %s", name, d.Format("2006-01-02T15:04"))
			}
		}
	}
}
