package kvprojection

import "time"

// SetRecheck shortens how often the bucket is checked, for tests; it
// returns the function that restores it.
func SetRecheck(d time.Duration) (restore func()) {
	old := recheckEvery
	recheckEvery = d
	return func() { recheckEvery = old }
}
