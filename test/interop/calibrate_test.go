//go:build interop

package interop

import (
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestDendriteShowsTheOriginsEDUs calibrates the EDU checks: the origin
// sends a message and each kind of EDU that fedsender carries straight to
// Dendrite, without fedsender, and alice's /sync shows each. fedsender's
// deliveries are checked with the same EDUs and the same readers, so a
// failure there is fedsender's.
func TestDendriteShowsTheOriginsEDUs(t *testing.T) {
	e := newEnv(t)
	room, remote := e.room.id, e.room.user
	msg := e.room.message("read me")
	e.sendDirect([]gomatrixserverlib.PDU{msg})
	e.sync.waitFor(time.Minute, "the message", func(s *synced) bool {
		return slices.Contains(s.messages(room, remote), "read me")
	})

	e.sendDirect(nil,
		e.room.typing(true),
		e.room.readReceipt(msg.EventID()),
		presence(remote, "online"),
		toDevice(remote, e.alice, "m.interop.ping", "ping-1", map[string]int{"n": 1}),
		e.origin.addDevice(remote, "REMOTEDEVICE"),
	)
	const within = time.Minute
	e.sync.waitFor(within, "the remote user typing", func(s *synced) bool { return s.typing(room, remote) })
	e.sync.waitFor(within, "the remote user's read receipt", func(s *synced) bool { return s.receipt(room, msg.EventID(), "m.read", remote) })
	e.sync.waitFor(within, "the remote user online", func(s *synced) bool { return s.presence(remote, "online") })
	e.sync.waitFor(within, "the to-device message", func(s *synced) bool { return len(s.toDevice(remote, "m.interop.ping")) > 0 })
	e.sync.waitFor(within, "the remote user's device list change", func(s *synced) bool { return s.deviceListChanged(remote) > 0 })
	if got := e.sync.seen.toDevice(remote, "m.interop.ping"); len(got) != 1 || string(got[0]) != `{"n":1}` {
		t.Errorf("alice got the to-device message as %s, want it once as {\"n\":1}", got)
	}
}
