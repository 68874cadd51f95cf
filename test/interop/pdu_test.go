//go:build interop

package interop

import (
	"testing"
	"time"
)

// TestKill9MidStreamDeliversEachMessageOnce kills fedsender with a
// transaction in flight and most messages still to send, starts it again
// on the same data, and checks that Dendrite's user sees every message
// once, in order.
func TestKill9MidStreamDeliversEachMessageOnce(t *testing.T) {
	e := newEnv(t)
	const total = 500
	e.front.holdWhen(func(acked sendCounts) bool { return acked.PDUs >= total/5 })
	want := e.publishMessages("crash", total)

	e.front.waitHeld(t, 3*time.Minute)
	e.fedsender.kill9()
	atKill := e.front.counts().PDUs
	t.Logf("killed with %d of %d PDUs acknowledged and a transaction in flight", atKill, total)
	e.front.releaseHeld()

	e.fedsender.start()
	e.waitMessages(5*time.Minute, want)
	t.Logf("PDUs sent again after the restart: %d", e.front.counts().PDUs-total)
}
