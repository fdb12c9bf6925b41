package wallclock

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// offsetSearch is Offset without its shortcut: every
// candidate offset tried. The shortcut must agree with it everywhere.
func offsetSearch(loc *time.Location, y int, mo time.Month, d, h, mi, s int) int {
	wall := time.Date(y, mo, d, h, mi, s, 0, time.UTC).Unix()
	return offsetBySearch(loc, wall, time.Date(y, mo, d, h, mi, s, 0, loc))
}

func TestOffsetShortcut(t *testing.T) {
	t.Parallel()
	zones := []string{"Australia/Sydney", "Australia/Adelaide", "Australia/Perth", "Australia/Lord_Howe",
		"Pacific/Chatham", "America/New_York", "Europe/London", "Pacific/Apia", "America/St_Johns"}
	years := [][2]int{{1890, 1896}, {1915, 1918}, {1970, 1972}, {2010, 2012}, {2024, 2027}}
	if testing.Short() {
		years = years[3:]
	}
	// The whole sweep, every 37 minutes of every year, takes about a
	// minute under -race: it runs with BRIDGE_LONG_TESTS=1. By default
	// the sweep is sparse (every 7 h 13 min) except within two days of
	// every change of offset, where it is every 7 minutes: that is where
	// a shortcut can go wrong.
	long := os.Getenv("BRIDGE_LONG_TESTS") != ""
	check := func(loc *time.Location, d time.Time) {
		y, mo, dd := d.Date()
		h, mi, s := d.Clock()
		require.Equal(t, offsetSearch(loc, y, mo, dd, h, mi, s), Offset(loc, y, mo, dd, h, mi, s),
			"%s %s", loc, d.Format("2006-01-02T15:04"))
	}
	for _, name := range zones {
		loc, err := time.LoadLocation(name)
		require.NoError(t, err)
		for _, yy := range years {
			start, end := time.Date(yy[0], 1, 1, 0, 0, 0, 0, time.UTC), time.Date(yy[1], 1, 1, 0, 0, 0, 0, time.UTC)
			if long {
				for d := start; d.Before(end); d = d.Add(37 * time.Minute) {
					check(loc, d)
				}
				continue
			}
			for d := start; d.Before(end); d = d.Add(7*time.Hour + 13*time.Minute) {
				check(loc, d)
			}
			_, prev := start.In(loc).Zone()
			for h := start; h.Before(end); h = h.Add(time.Hour) {
				if _, off := h.In(loc).Zone(); off != prev {
					prev = off
					for d := h.Add(-48 * time.Hour); d.Before(h.Add(48 * time.Hour)); d = d.Add(7 * time.Minute) {
						check(loc, d)
					}
				}
			}
		}
	}
}
