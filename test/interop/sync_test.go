//go:build interop

package interop

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// syncFilter keeps every timeline event of a /sync answer, so the stream
// shows each event, in order, with no gap.
const syncFilter = `{"room":{"timeline":{"limit":1000}}}`

// syncer follows a local user's /sync stream and keeps everything it
// showed, in the order Dendrite streamed it.
type syncer struct {
	c     *client
	since string
	seen  synced
}

// synced is what a user's /sync showed so far.
type synced struct {
	Timeline           map[string][]event // by room, in stream order
	Ephemeral          map[string][]event // by room: m.typing, m.receipt
	Presence           []event
	ToDevice           []event
	DeviceListsChanged []string
}

// event is an event as /sync shows it to a client.
type event struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// syncResponse is the part of a /sync answer the tests look at.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []event `json:"events"`
				Limited bool    `json:"limited"`
			} `json:"timeline"`
			Ephemeral struct {
				Events []event `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
	Presence struct {
		Events []event `json:"events"`
	} `json:"presence"`
	ToDevice struct {
		Events []event `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
	} `json:"device_lists"`
}

// syncer starts following the user's /sync stream from its beginning.
func (c *client) syncer() *syncer {
	return &syncer{c: c, seen: synced{Timeline: map[string][]event{}, Ephemeral: map[string][]event{}}}
}

// poll makes one /sync call, waiting at most timeout for news, and keeps
// what it shows.
func (s *syncer) poll(timeout time.Duration) {
	s.c.t.Helper()
	q := url.Values{"filter": {syncFilter}, "timeout": {fmt.Sprint(timeout.Milliseconds())}}
	if s.since != "" {
		q.Set("since", s.since)
	}
	var resp syncResponse
	s.c.do("GET", "/_matrix/client/v3/sync?"+q.Encode(), nil, &resp)
	for room, r := range resp.Rooms.Join {
		if r.Timeline.Limited && s.since != "" {
			s.c.t.Fatalf("/sync left a gap in %s's timeline: the order cannot be checked", room)
		}
		s.seen.Timeline[room] = append(s.seen.Timeline[room], r.Timeline.Events...)
		s.seen.Ephemeral[room] = append(s.seen.Ephemeral[room], r.Ephemeral.Events...)
	}
	s.seen.Presence = append(s.seen.Presence, resp.Presence.Events...)
	s.seen.ToDevice = append(s.seen.ToDevice, resp.ToDevice.Events...)
	s.seen.DeviceListsChanged = append(s.seen.DeviceListsChanged, resp.DeviceLists.Changed...)
	s.since = resp.NextBatch
}

// waitFor polls /sync until cond holds for what it showed so far, failing
// with what when within passes.
func (s *syncer) waitFor(within time.Duration, what string, cond func(*synced) bool) {
	s.c.t.Helper()
	if !s.until(within, cond) {
		s.c.t.Fatalf("%s's /sync did not show %s within %v", s.c.UserID, what, within)
	}
}

// until polls /sync until cond holds for what it showed so far and reports
// whether it did within the time given.
func (s *syncer) until(within time.Duration, cond func(*synced) bool) bool {
	s.c.t.Helper()
	deadline := time.Now().Add(within)
	for !cond(&s.seen) {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		s.poll(min(left, 5*time.Second))
	}
	return true
}

// messages returns the bodies of the m.room.message events from sender in
// room's timeline, in stream order, duplicates included.
func (s *synced) messages(room, sender string) []string {
	var bodies []string
	for _, ev := range s.Timeline[room] {
		if ev.Type != "m.room.message" || ev.Sender != sender {
			continue
		}
		var content struct {
			Body string `json:"body"`
		}
		json.Unmarshal(ev.Content, &content)
		bodies = append(bodies, content.Body)
	}
	return bodies
}

// joined reports whether room's timeline showed user joining.
func (s *synced) joined(room, user string) bool {
	for _, ev := range s.Timeline[room] {
		var content struct {
			Membership string `json:"membership"`
		}
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == user &&
			json.Unmarshal(ev.Content, &content) == nil && content.Membership == "join" {
			return true
		}
	}
	return false
}

// The EDU helpers below read the kinds of EDU that fedsender carries as a
// user sees them: each reports whether /sync showed it so far.

// typing reports whether room's typing list was ever exactly users.
func (s *synced) typing(room string, users ...string) bool {
	for _, ev := range s.Ephemeral[room] {
		var content struct {
			UserIDs []string `json:"user_ids"`
		}
		if ev.Type != "m.typing" || json.Unmarshal(ev.Content, &content) != nil {
			continue
		}
		if slices.Equal(slices.Sorted(slices.Values(content.UserIDs)), slices.Sorted(slices.Values(users))) {
			return true
		}
	}
	return false
}

// receipt reports whether room showed user's receipt of receiptType
// (m.read) on eventID.
func (s *synced) receipt(room, eventID, receiptType, user string) bool {
	for _, ev := range s.Ephemeral[room] {
		var content map[string]map[string]map[string]json.RawMessage
		if ev.Type != "m.receipt" || json.Unmarshal(ev.Content, &content) != nil {
			continue
		}
		if _, ok := content[eventID][receiptType][user]; ok {
			return true
		}
	}
	return false
}

// presence reports whether user was shown with the presence state
// (online, unavailable, offline).
func (s *synced) presence(user, state string) bool {
	for _, ev := range s.Presence {
		var content struct {
			Presence string `json:"presence"`
		}
		if ev.Type == "m.presence" && ev.Sender == user && json.Unmarshal(ev.Content, &content) == nil && content.Presence == state {
			return true
		}
	}
	return false
}

// toDevice returns the to-device messages of eventType from sender, in the
// order they arrived, duplicates included.
func (s *synced) toDevice(sender, eventType string) []json.RawMessage {
	var out []json.RawMessage
	for _, ev := range s.ToDevice {
		if ev.Type == eventType && ev.Sender == sender {
			out = append(out, ev.Content)
		}
	}
	return out
}

// deviceListChanged returns how many /sync answers named user in
// device_lists.changed.
func (s *synced) deviceListChanged(user string) int {
	n := 0
	for _, u := range s.DeviceListsChanged {
		if u == user {
			n++
		}
	}
	return n
}
