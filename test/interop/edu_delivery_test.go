//go:build interop

package interop

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMessagesAndEphemeralEDUsReachDendrite sends the remote user's
// messages through fedsender, more than one transaction carries, and,
// while they flow, two users of the origin typing, their read receipts of
// the last message and their presence, one envelope each (fedsender merges
// those of a transaction into one m.presence and one m.receipt EDU): alice
// sees the messages in order and every user's EDUs.
func TestMessagesAndEphemeralEDUsReachDendrite(t *testing.T) {
	e := newEnv(t)
	room := e.room.id
	other := e.origin.join(e.dendrite.serverName, room, e.origin.userID("other"))
	e.sync.waitFor(time.Minute, other.user+" joining", func(s *synced) bool { return s.joined(room, other.user) })
	users := []*remoteRoom{e.room, other}

	want := e.publishMessages("hello", 120)
	last := e.room.message("read me")
	e.fedsender.publishPDUs(e.dendrite.serverName, last)
	want = append(want, "read me")
	for _, u := range users {
		e.publishEDU(u.typing(true), "")
		e.publishEDU(u.readReceipt(last.EventID()), "")
		e.publishEDU(presence(u.user, "online"), "")
	}

	e.waitMessages(3*time.Minute, want)
	const within = time.Minute
	e.sync.waitFor(within, "both users typing", func(s *synced) bool { return s.typing(room, e.room.user, other.user) })
	for _, u := range users {
		e.sync.waitFor(within, u.user+"'s read receipt of the last message", func(s *synced) bool {
			return s.receipt(room, last.EventID(), "m.read", u.user)
		})
		e.sync.waitFor(within, u.user+" online", func(s *synced) bool { return s.presence(u.user, "online") })
	}
	t.Logf("EDUs Dendrite acknowledged for 2 users each: %d m.receipt, %d m.presence, %d m.typing",
		len(e.front.acknowledged("m.receipt")), len(e.front.acknowledged("m.presence")), len(e.front.acknowledged("m.typing")))
}

// TestToDeviceAndDeviceListReachDendrite sends a to-device message through
// fedsender, published twice with its message_id as Nats-Msg-Id as a
// homeserver retrying its publish does: alice's device gets it once
// (Dendrite does not deduplicate to-device messages). Then two device-list
// updates of the remote user, published without prev_id: fedsender chains
// them, and alice sees the user's device list change without Dendrite
// having to fetch the list again, which it does when a prev_id names an
// update it never got.
func TestToDeviceAndDeviceListReachDendrite(t *testing.T) {
	e := newEnv(t)
	remote := e.room.user
	ping := toDevice(remote, e.alice, "m.interop.ping", "ping-1", map[string]int{"n": 1})
	e.publishEDU(ping, "ping-1")
	e.publishEDU(ping, "ping-1")
	e.fenceToDevice("after-ping")
	if got := e.sync.seen.toDevice(remote, "m.interop.ping"); len(got) != 1 || string(got[0]) != `{"n":1}` {
		t.Errorf("alice's device got the to-device message as %s, want it once as {\"n\":1}", got)
	}

	devices := "/_matrix/federation/v1/user/devices/"
	e.publishEDU(e.origin.addDevice(remote, "REMOTEDEVICE1"), "")
	e.sync.waitFor(time.Minute, "the remote user's device list change", func(s *synced) bool { return s.deviceListChanged(remote) == 1 })
	fetched := len(e.origin.requestsTo(devices))
	e.publishEDU(e.origin.addDevice(remote, "REMOTEDEVICE2"), "")
	e.sync.waitFor(time.Minute, "the remote user's second device list change", func(s *synced) bool { return s.deviceListChanged(remote) == 2 })
	if again := e.origin.requestsTo(devices)[fetched:]; len(again) > 0 {
		t.Errorf("Dendrite fetched the remote user's device list again (%q): the second update's prev_id did not name the first", again)
	}
	var prevIDs []string
	for _, raw := range e.front.acknowledged("m.device_list_update") {
		var content struct {
			PrevID json.RawMessage `json:"prev_id"`
		}
		json.Unmarshal(raw, &content)
		prevIDs = append(prevIDs, string(content.PrevID))
	}
	if want := []string{"[]", "[1]"}; !slices.Equal(prevIDs, want) {
		t.Errorf("Dendrite was sent the device-list updates with prev_id %q, want %q", prevIDs, want)
	}
	e.waitDevices(remote, time.Minute, "REMOTEDEVICE1", "REMOTEDEVICE2")
}

// TestKill9WithToDevicePendingDeliversEachOnce kills fedsender with a
// to-device transaction in flight and most messages still to send, starts
// it again on the same data, and checks that alice's device gets every
// to-device message once, in order. A device-list update published
// without prev_id before the kill and one still pending at the kill show
// that fedsender keeps the chain across the restart: Dendrite applies the
// second without fetching the list again.
func TestKill9WithToDevicePendingDeliversEachOnce(t *testing.T) {
	e := newEnv(t)
	remote := e.room.user
	devices := "/_matrix/federation/v1/user/devices/"
	e.publishEDU(e.origin.addDevice(remote, "BEFOREKILL"), "")
	e.sync.waitFor(time.Minute, "the remote user's device list change", func(s *synced) bool { return s.deviceListChanged(remote) == 1 })
	fetched := len(e.origin.requestsTo(devices))

	const total = 300
	e.front.holdWhen(func(acked sendCounts) bool { return acked.EDUs["m.direct_to_device"] >= total/5 })
	seqs := make([]uint64, total)
	for i := range total {
		id := fmt.Sprintf("crash-%d", i)
		seqs[i] = e.publishEDU(toDevice(remote, e.alice, "m.interop.crash", id, map[string]int{"n": i}), id)
	}

	e.front.waitHeld(t, 3*time.Minute)
	// Published once a transaction is held, so not in it: pending at the
	// kill.
	e.publishEDU(e.origin.addDevice(remote, "AFTERKILL"), "")
	// fedsender stores the EDU offset as soon as the destination answered,
	// while it sends the next transaction: a crash within those few
	// milliseconds sends the acknowledged messages again (at least once).
	// The kill comes after, so any message sent twice is a fault.
	atKill := e.front.counts().EDUs["m.direct_to_device"]
	e.fedsender.waitEDUOffset(e.dendrite.serverName, seqs[atKill-1], time.Minute)
	e.fedsender.kill9()
	t.Logf("killed with %d of %d to-device messages acknowledged and a transaction in flight", atKill, total)
	// Released only once the front door saw the killed sender hang up:
	// Dendrite never gets the transaction that was in flight.
	e.front.waitHungUp(t, time.Minute)
	e.front.releaseHeld()

	e.fedsender.start()
	e.fenceToDevice("after-crash")
	var got []int
	for _, raw := range e.sync.seen.toDevice(remote, "m.interop.crash") {
		var content struct{ N int }
		if err := json.Unmarshal(raw, &content); err != nil {
			t.Fatalf("to-device content %s: %v", raw, err)
		}
		got = append(got, content.N)
	}
	want := make([]int, total)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		t.Errorf("alice's device got %d of %d to-device messages, want each once and in order; got\n %v", len(got), total, compact(got))
	}
	t.Logf("to-device messages Dendrite acknowledged twice: %d", e.front.counts().EDUs["m.direct_to_device"]-total-1)

	e.sync.waitFor(time.Minute, "the remote user's device list change after the restart", func(s *synced) bool { return s.deviceListChanged(remote) == 2 })
	if again := e.origin.requestsTo(devices)[fetched:]; len(again) > 0 {
		t.Errorf("Dendrite fetched the remote user's device list again (%q): the update sent after the restart did not chain to the one before", again)
	}
}

// fenceToDevice publishes one more to-device message of the remote user
// and waits until alice's device got it. fedsender delivers one sender's
// to-device messages in order, so whatever it sent before, duplicates
// included, has arrived by then.
func (e *env) fenceToDevice(id string) {
	e.t.Helper()
	e.publishEDU(toDevice(e.room.user, e.alice, "m.interop.fence", id, map[string]string{"id": id}), id)
	e.sync.waitFor(3*time.Minute, "the to-device message "+id, func(s *synced) bool {
		for _, raw := range s.toDevice(e.room.user, "m.interop.fence") {
			var content struct{ ID string }
			if json.Unmarshal(raw, &content) == nil && content.ID == id {
				return true
			}
		}
		return false
	})
}

// waitDevices waits until alice's key query lists exactly devices for user.
func (e *env) waitDevices(user string, within time.Duration, devices ...string) {
	e.t.Helper()
	var listed []string
	deadline := time.Now().Add(within)
	for {
		var keys struct {
			DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		}
		e.alice.do("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{user: {}}}, &keys)
		listed = slices.Sorted(maps.Keys(keys.DeviceKeys[user]))
		if slices.Equal(listed, devices) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("alice's key query listed %s's devices as %q within %v, want %q", user, listed, within, devices)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// compact writes a sequence of numbers with its ascending runs as ranges:
// [0 1 2 5 1 2] as "0-2 5 1-2".
func compact(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(ns[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ns[i], ns[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, " ")
}
