package receiver

import (
	"context"
	"strings"
	"testing"
	"time"
)

// WaitTimeout bounds the waits of the testing helpers.
const WaitTimeout = 10 * time.Second

// Start is New for tests: it fails the test on error and closes the receiver
// when the test ends.
func Start(t testing.TB, opts Options) *Receiver {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatalf("start receiver: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// WaitFor waits up to WaitTimeout for cond and fails the test, naming what
// was awaited, if it does not come true.
func (r *Receiver) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), WaitTimeout)
	defer cancel()
	if err := r.Wait(ctx, cond); err != nil {
		t.Fatalf("receiver %s: waiting for %s: %v (requests %d, transactions %d, PDUs %d, violations %q)",
			r.ServerName(), what, err, r.Requests(), len(r.Transactions()), r.PDUCount(), r.Violations())
	}
}

// WaitPDUs waits until at least n PDUs have been accepted.
func (r *Receiver) WaitPDUs(t testing.TB, n int) {
	t.Helper()
	r.WaitFor(t, "PDUs", func() bool { return r.PDUCount() >= n })
}

// RequireNoViolations fails the test if any protocol violation was seen.
func (r *Receiver) RequireNoViolations(t testing.TB) {
	t.Helper()
	if v := r.Violations(); len(v) > 0 {
		t.Fatalf("receiver %s saw %d protocol violations:\n  %s", r.ServerName(), r.ViolationCount(), strings.Join(v, "\n  "))
	}
}
