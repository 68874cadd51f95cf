//go:build interop

package interop

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/fedsender/fedsender/test/pki"
)

// env is a Dendrite with a local user, alice, in a room that a user of the
// origin joined over federation, and a fedsender sending as the origin.
type env struct {
	t         *testing.T
	origin    *origin
	front     *front
	dendrite  *dendrite
	alice     *client
	sync      *syncer // alice's /sync
	room      *remoteRoom
	fedsender *fedsender
	direct    int // transactions sent by sendDirect
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca := pki.MustCA(t)
	e := &env{t: t, origin: startOrigin(t, ca), front: startFront(t, ca)}
	e.dendrite = startDendrite(t, e.front.name, ca)
	e.front.forwardTo(t, e.dendrite.fedURL)

	e.alice = e.dendrite.register("alice")
	roomID := e.alice.createRoom()
	e.room = e.origin.join(e.dendrite.serverName, roomID, e.origin.userID("remote"))
	e.sync = e.alice.syncer()
	e.sync.waitFor(time.Minute, e.room.user+" joining "+roomID, func(s *synced) bool { return s.joined(roomID, e.room.user) })

	e.fedsender = startFedsender(t, e.origin, ca)
	return e
}

// publishMessages builds n messages of the remote user, named
// "<prefix> <i>", publishes them to fedsender for Dendrite, and returns
// their bodies in order.
func (e *env) publishMessages(prefix string, n int) []string {
	e.t.Helper()
	bodies := make([]string, n)
	events := make([]gomatrixserverlib.PDU, n)
	for i := range n {
		bodies[i] = fmt.Sprintf("%s %d", prefix, i)
		events[i] = e.room.message(bodies[i])
	}
	e.fedsender.publishPDUs(e.dendrite.serverName, events...)
	return bodies
}

// waitMessages waits until alice's /sync shows the remote user's messages
// want, and checks that they came in that order, each once, and that
// Dendrite never had to ask the origin for an event it missed (which it
// does when an event arrives before the one it follows).
func (e *env) waitMessages(within time.Duration, want []string) {
	e.t.Helper()
	arrived := e.sync.until(within, func(s *synced) bool {
		return len(s.messages(e.room.id, e.room.user)) >= len(want)
	})
	got := e.sync.seen.messages(e.room.id, e.room.user)
	if !arrived || !slices.Equal(got, want) {
		e.t.Errorf("alice saw %d of the remote user's %d messages as\n %q\nwant, in this order and each once,\n %q", len(got), len(want), got, want)
	}
	if asked := e.origin.requestsTo("/_matrix/federation/v1/get_missing_events/"); len(asked) > 0 {
		e.t.Errorf("Dendrite asked the origin for %d events it missed, which it does for an event that arrives before the one it follows", len(asked))
	}
}
