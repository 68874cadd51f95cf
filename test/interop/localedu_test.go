//go:build interop

package interop

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

// TestSyncShowsLocalEDUs checks the /sync readers that the EDU checks use
// on what Dendrite's own users send: a user in alice's room types, reads,
// goes online, sends alice a to-device message and uploads device keys,
// and alice's /sync shows each.
func TestSyncShowsLocalEDUs(t *testing.T) {
	e := newEnv(t)
	room := e.room.id
	bob := e.dendrite.register("bob")
	bob.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	e.sync.waitFor(time.Minute, "bob joining", func(s *synced) bool { return s.joined(room, bob.UserID) })

	var sent struct {
		EventID string `json:"event_id"`
	}
	bob.do("PUT", roomPath(room, "send/m.room.message/1"), map[string]any{"msgtype": "m.text", "body": "hi"}, &sent)
	bob.do("PUT", roomPath(room, "typing/"+url.PathEscape(bob.UserID)), map[string]any{"typing": true, "timeout": 30000}, nil)
	bob.do("POST", roomPath(room, "receipt/m.read/"+url.PathEscape(sent.EventID)), map[string]any{}, nil)
	bob.do("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.UserID)+"/status", map[string]any{"presence": "online"}, nil)
	bob.do("PUT", "/_matrix/client/v3/sendToDevice/m.interop.ping/1", map[string]any{
		"messages": map[string]any{e.alice.UserID: map[string]any{e.alice.DeviceID: map[string]any{"n": 1}}},
	}, nil)
	bob.do("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": deviceKeys(t, bob)}, nil)

	const within = time.Minute
	e.sync.waitFor(within, "bob typing", func(s *synced) bool { return s.typing(room, bob.UserID) })
	e.sync.waitFor(within, "bob's read receipt", func(s *synced) bool { return s.receipt(room, sent.EventID, "m.read", bob.UserID) })
	e.sync.waitFor(within, "bob online", func(s *synced) bool { return s.presence(bob.UserID, "online") })
	e.sync.waitFor(within, "bob's to-device message", func(s *synced) bool { return len(s.toDevice(bob.UserID, "m.interop.ping")) > 0 })
	e.sync.waitFor(within, "bob's device list change", func(s *synced) bool { return s.deviceListChanged(bob.UserID) })
	if got := e.sync.seen.toDevice(bob.UserID, "m.interop.ping"); len(got) != 1 || string(got[0]) != `{"n":1}` {
		t.Errorf("alice got bob's to-device message as %s, want it once as {\"n\":1}", got)
	}
}

// deviceKeys returns identity keys for c's device, self-signed as a client
// signs them.
func deviceKeys(t *testing.T, c *client) json.RawMessage {
	t.Helper()
	key, err := xmatrix.GenerateKey(c.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	pub := base64.RawStdEncoding.EncodeToString(key.Public())
	unsigned, err := json.Marshal(map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + c.DeviceID: pub, "curve25519:" + c.DeviceID: pub},
	})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := xmatrix.SignJSON(c.UserID, key, unsigned)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}
