//go:build interop

package interop

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

// The EDUs below are those the origin's homeserver sends for its remote
// user, one function per kind, as envelopes for fedsender's EDU stream:
// env.publishEDU sends one through fedsender, env.sendDirect straight to
// Dendrite. The synced readers (sync_test.go) check each as alice sees it.

// typing is the remote user starting (or stopping) to type in the room.
func (r *remoteRoom) typing(typing bool) edu {
	return edu{Type: "m.typing", Content: map[string]any{"room_id": r.id, "user_id": r.user, "typing": typing}}
}

// readReceipt is the remote user's m.read receipt of eventID in the room.
func (r *remoteRoom) readReceipt(eventID string) edu {
	return edu{Type: "m.receipt", Content: map[string]any{r.id: map[string]any{"m.read": map[string]any{
		r.user: map[string]any{"event_ids": []string{eventID}, "data": map[string]any{"ts": time.Now().UnixMilli()}},
	}}}}
}

// presence is user's presence state (online, unavailable, offline).
func presence(user, state string) edu {
	return edu{Type: "m.presence", Content: map[string]any{"push": []any{map[string]any{
		"user_id": user, "presence": state, "last_active_ago": 0, "currently_active": state == "online",
	}}}}
}

// toDevice is a to-device message of eventType from sender to the device
// to is logged in on; messageID is its message_id.
func toDevice(sender string, to *client, eventType, messageID string, content any) edu {
	return edu{Type: "m.direct_to_device", Content: map[string]any{
		"sender": sender, "type": eventType, "message_id": messageID,
		"messages": map[string]any{to.UserID: map[string]any{to.DeviceID: content}},
	}}
}

// addDevice gives user (of the origin) a new device: the origin lists it
// on GET /user/devices from now on, and the returned m.device_list_update
// announces it with the next stream_id and no prev_id (fedsender fills
// prev_id per destination).
func (o *origin) addDevice(user, deviceID string) edu {
	o.t.Helper()
	keys := deviceKeys(o.t, user, deviceID)
	o.mu.Lock()
	defer o.mu.Unlock()
	list := o.devices[user]
	if list == nil {
		list = &userDevices{UserID: user}
		o.devices[user] = list
	}
	list.StreamID++
	device, err := json.Marshal(map[string]any{"device_id": deviceID, "keys": keys})
	if err != nil {
		o.t.Fatal(err)
	}
	list.Devices = append(list.Devices, device)
	return edu{Type: "m.device_list_update", Content: map[string]any{
		"user_id": user, "device_id": deviceID, "stream_id": list.StreamID, "deleted": false, "keys": keys,
	}}
}

// deviceKeys returns identity keys for a device, self-signed as a client
// signs them.
func deviceKeys(t testing.TB, user, deviceID string) json.RawMessage {
	t.Helper()
	key, err := xmatrix.GenerateKey(deviceID)
	if err != nil {
		t.Fatal(err)
	}
	pub := base64.RawStdEncoding.EncodeToString(key.Public())
	unsigned, err := json.Marshal(map[string]any{
		"user_id": user, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + deviceID: pub, "curve25519:" + deviceID: pub},
	})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := xmatrix.SignJSON(user, key, unsigned)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// publishEDU publishes x for Dendrite to fedsender's EDU stream and
// returns its sequence there; msgID, when set, is its Nats-Msg-Id.
func (e *env) publishEDU(x edu, msgID string) uint64 {
	e.t.Helper()
	x.Destinations = []string{e.dendrite.serverName}
	return e.fedsender.publishEDU(x, msgID)
}

// sendDirect sends PDUs and EDUs from the origin straight to Dendrite in
// one transaction, without fedsender.
func (e *env) sendDirect(pdus []gomatrixserverlib.PDU, edus ...edu) {
	e.t.Helper()
	type txnEDU struct {
		Type    string `json:"edu_type"`
		Content any    `json:"content"`
	}
	body := struct {
		Origin string            `json:"origin"`
		TS     int64             `json:"origin_server_ts"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []txnEDU          `json:"edus"`
	}{Origin: e.origin.name, TS: time.Now().UnixMilli(), PDUs: []json.RawMessage{}}
	for _, p := range pdus {
		body.PDUs = append(body.PDUs, p.JSON())
	}
	for _, x := range edus {
		body.EDUs = append(body.EDUs, txnEDU{x.Type, x.Content})
	}
	e.direct++
	e.origin.federation("PUT", e.dendrite.serverName, fmt.Sprintf("/_matrix/federation/v1/send/direct-%d", e.direct), body, nil)
}
