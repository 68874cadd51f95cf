//go:build interop

package interop

import (
	"testing"
	"time"
)

// TestMessagesReachDendriteInOrder sends more messages than one
// transaction carries and reads them back as Dendrite's local user.
func TestMessagesReachDendriteInOrder(t *testing.T) {
	e := newEnv(t)
	want := e.publishMessages("hello", 120)
	e.waitMessages(3*time.Minute, want)
}

// TestKill9MidStreamDeliversEachMessageOnce kills fedsender while
// messages are still to be sent, starts it again on the same data, and
// checks that Dendrite's user sees every message once, in order.
func TestKill9MidStreamDeliversEachMessageOnce(t *testing.T) {
	e := newEnv(t)
	const total = 500
	want := e.publishMessages("crash", total)

	e.front.waitAckedPDUs(t, total/5, 3*time.Minute)
	e.fedsender.kill9()
	atKill := e.front.ackedPDUs()
	t.Logf("Dendrite had acknowledged %d of %d PDUs at the kill", atKill, total)
	if atKill >= total {
		t.Fatal("every PDU was acknowledged before the kill: the test proves nothing; publish more")
	}

	e.fedsender.start()
	e.waitMessages(5*time.Minute, want)
	t.Logf("PDUs sent again after the restart: %d", e.front.ackedPDUs()-total)
}
