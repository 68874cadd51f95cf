package edu

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/streams"
)

var now = time.UnixMilli(1_000_000_000)

func item(seq uint64, eduType, key, content string) streams.EDUItem {
	return streams.EDUItem{Seq: seq, TS: now.UnixMilli(), EDU: &streams.EDU{Type: eduType, Key: key, Content: []byte(content)}}
}

func typing(seq uint64, user string, on bool) streams.EDUItem {
	return item(seq, TypeTyping, "", fmt.Sprintf(`{"room_id":"!r:a","typing":%v,"user_id":"%s"}`, on, user))
}

func toDevice(seq uint64) streams.EDUItem {
	return item(seq, TypeToDevice, "", fmt.Sprintf(`{"message_id":"m%d","messages":{},"sender":"@s:a","type":"m.x"}`, seq))
}

func deviceList(seq uint64) streams.EDUItem {
	return item(seq, TypeDeviceList, "", fmt.Sprintf(`{"device_id":"D","stream_id":%d,"user_id":"@s:a"}`, seq))
}

func types(b *Batch) []string {
	var out []string
	for _, e := range b.EDUs {
		out = append(out, e.Type)
	}
	return out
}

func TestTypingCoalescesOnRoomAndUser(t *testing.T) {
	coalesced := 0
	o := New(Options{Coalesced: func(string) { coalesced++ }}, 0)
	o.Add(typing(1, "@a:a", true), false)
	o.Add(typing(2, "@b:a", true), false)
	o.Add(typing(3, "@a:a", false), false)
	b := o.Take(now)
	if len(b.EDUs) != 2 || coalesced != 1 {
		t.Fatalf("%d EDUs (%d coalesced), want 2 and 1", len(b.EDUs), coalesced)
	}
	if !strings.Contains(string(b.EDUs[0].Content), `"typing":false`) {
		t.Errorf("first EDU %s: want @a's newer state, in its place", b.EDUs[0].Content)
	}
	if o.Done() != 3 {
		t.Errorf("Done %d, want 3: droppable EDUs are done once handed over", o.Done())
	}
}

func TestTypingIsNotKeptForABackedOffDestinationAndExpires(t *testing.T) {
	var dropped []string
	o := New(Options{Dropped: func(_, reason string) { dropped = append(dropped, reason) }}, 0)
	o.Add(typing(1, "@a:a", true), true)
	o.Add(typing(2, "@b:a", true), false)
	if b := o.Take(now.Add(31 * time.Second)); b != nil {
		t.Errorf("sent %v 31 s later", types(b))
	}
	if strings.Join(dropped, ",") != DroppedBackoff+","+DroppedExpired {
		t.Errorf("dropped %v", dropped)
	}
}

func TestPresenceMergesIntoOneEDUOfAtMost50Users(t *testing.T) {
	o := New(Options{}, 0)
	for i := range 60 {
		o.Add(item(uint64(i+1), TypePresence, "", fmt.Sprintf(`{"push":[{"presence":"online","user_id":"@u%d:a"}]}`, i)), false)
	}
	// A newer state of user 0 replaces the first.
	o.Add(item(61, TypePresence, "", `{"push":[{"presence":"offline","user_id":"@u0:a"}]}`), false)
	b := o.Take(now)
	if got := types(b); len(got) != 1 || got[0] != TypePresence {
		t.Fatalf("EDUs %v, want one m.presence", got)
	}
	var c struct {
		Push []struct{ UserID, Presence string }
	}
	if err := json.Unmarshal(b.EDUs[0].Content, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Push) != 50 || c.Push[0].Presence != "offline" {
		t.Errorf("%d users, first %+v; want 50, the first one's newest state", len(c.Push), c.Push[0])
	}
	o.Acked(b)
	if b2 := o.Take(now); b2 == nil || len(b2.EDUs) != 1 {
		t.Fatalf("second transaction: want the 10 others")
	}
}

func TestReceiptsMergeIntoAtMostFiveEDUs(t *testing.T) {
	o := New(Options{}, 0)
	// The same user, room and type under 7 explicit keys: each must go in
	// an EDU of its own.
	for i := range 7 {
		o.Add(item(uint64(i+1), TypeReceipt, fmt.Sprint(i), fmt.Sprintf(`{"!r:a":{"m.read":{"@u:a":{"data":{"ts":%d},"event_ids":["$e%d"]}}}}`, i, i)), false)
	}
	o.Add(item(8, TypeReceipt, "", `{"!r:a":{"m.read":{"@v:a":{"data":{"ts":1},"event_ids":["$x"]}}}}`), false)
	b := o.Take(now)
	if len(b.EDUs) != MaxReceiptEDUs {
		t.Fatalf("%d receipt EDUs, want %d", len(b.EDUs), MaxReceiptEDUs)
	}
	if b2 := o.Take(now); b2 == nil || len(b2.EDUs) != 2 {
		t.Errorf("the rest: %v", b2)
	}
}

func TestFillOrderLeavesSlotsSoNoKindStarves(t *testing.T) {
	o := New(Options{}, 0)
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	for range 200 {
		o.Add(toDevice(next()), false)
	}
	for range 200 {
		o.Add(deviceList(next()), false)
	}
	o.Add(typing(next(), "@a:a", true), false)
	o.Add(item(next(), TypePresence, "", `{"push":[{"presence":"online","user_id":"@p:a"}]}`), false)
	o.Add(item(next(), "org.example.custom", "", `{}`), false)
	b := o.Take(now)
	count := map[string]int{}
	for _, e := range b.EDUs {
		count[e.Type]++
	}
	want := map[string]int{TypePresence: 1, TypeToDevice: 89, TypeDeviceList: 5, "org.example.custom": 1, TypeTyping: 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("one transaction carries %v, want %v", count, want)
	}
	if len(b.EDUs) > MaxEDUs || b.EDUs[0].Type != TypePresence || b.EDUs[len(b.EDUs)-1].Type != TypeTyping {
		t.Errorf("order %v", types(b))
	}
	if o.Done() != 0 {
		t.Errorf("Done %d before the acknowledgement", o.Done())
	}
	o.Acked(b)
	if o.Done() != 89 || o.Pending() != 111+195 {
		t.Errorf("after the ack Done %d, pending %d", o.Done(), o.Pending())
	}
}

func TestAReturnedBatchKeepsMustDeliverAndNewestDroppable(t *testing.T) {
	o := New(Options{}, 0)
	o.Add(toDevice(1), false)
	o.Add(item(2, TypePresence, "", `{"push":[{"presence":"online","user_id":"@p:a"}]}`), false)
	o.Add(typing(3, "@a:a", true), false)
	b := o.Take(now)
	o.Return(b)
	b = o.Take(now)
	if got := types(b); fmt.Sprint(got) != "[m.presence m.direct_to_device]" {
		t.Errorf("after a given-up transaction: %v, want presence and to-device again, typing dropped", got)
	}
}

func TestDroppableHeldAreBounded(t *testing.T) {
	dropped := 0
	o := New(Options{MaxHeld: 3, Dropped: func(string, string) { dropped++ }}, 0)
	for i := range 5 {
		o.Add(item(uint64(i+1), TypePresence, "", fmt.Sprintf(`{"push":[{"user_id":"@u%d:a"}]}`, i)), false)
	}
	if o.Held() != 3 || dropped != 2 {
		t.Errorf("held %d, dropped %d; want 3 and 2", o.Held(), dropped)
	}
}

func TestMalformedContentIsForwardedAsGiven(t *testing.T) {
	o := New(Options{}, 0)
	o.Add(item(1, TypePresence, "", `{"not_push":1}`), false)
	b := o.Take(now)
	if len(b.EDUs) != 1 || string(b.EDUs[0].Content) != `{"not_push":1}` {
		t.Errorf("EDUs %+v", b.EDUs)
	}
	if got := string(b.EDUs[0].JSON()); got != `{"content":{"not_push":1},"edu_type":"m.presence"}` {
		t.Errorf("JSON %s", got)
	}
}

func TestRestoreHoldsDoneUntilTheStreamIsReadAgain(t *testing.T) {
	o := New(Options{}, 5)
	o.Restoring()
	o.Add(toDevice(9), false)
	o.Add(typing(10, "@a:a", true), false)
	if o.Done() != 5 {
		t.Fatalf("Done %d while restoring, want 5", o.Done())
	}
	o.Restore([]streams.EDUItem{toDevice(6), typing(7, "@b:a", true), deviceList(8)})
	b := o.Take(now)
	var seqs []uint64
	for _, e := range b.EDUs {
		seqs = append(seqs, e.Seq)
	}
	if fmt.Sprint(seqs) != "[6 9 8 0]" || o.Pending() != 3 {
		t.Errorf("after Restore took %v (pending %d): want to-device 6 and 9, device list 8, the live typing", seqs, o.Pending())
	}
	o.Acked(b)
	if o.Done() != 10 {
		t.Errorf("Done %d after the ack, want 10", o.Done())
	}
}

func TestPacedReceiptsWaitUnlessATransactionGoesAnyway(t *testing.T) {
	o := New(Options{}, 0)
	receipt := item(1, TypeReceipt, "", `{"!r:a":{"m.read":{"@u:a":{"data":{"ts":1},"event_ids":["$e"]}}}}`)
	receipt.NotBefore = now.UnixMilli() + 5000
	o.Add(receipt, false)
	if ready, next := o.Ready(now.UnixMilli()); ready || next != now.UnixMilli()+5000 {
		t.Fatalf("Ready = %v, %d; want false until the receipt is due", ready, next)
	}
	if ready, _ := o.Ready(now.UnixMilli() + 5000); !ready {
		t.Fatal("not ready once due")
	}
	o.Add(toDevice(2), false)
	if ready, _ := o.Ready(now.UnixMilli()); !ready {
		t.Fatal("a to-device message is not ready at once")
	}
	if got := types(o.Take(now)); fmt.Sprint(got) != "[m.receipt m.direct_to_device]" {
		t.Errorf("the transaction carries %v: the paced receipt goes with it", got)
	}
}

func TestTransactionsStopTakingEDUsPastAMebibyte(t *testing.T) {
	o := New(Options{}, 0)
	big := `{"message_id":"m","messages":{"@u:a":{"D":{"b":"` + strings.Repeat("x", 60_000) + `"}}},"sender":"@s:a","type":"x"}`
	for i := range 40 {
		o.Add(item(uint64(i+1), TypeToDevice, "", big), false)
	}
	b := o.Take(now)
	if n := len(b.EDUs); n != 18 {
		t.Errorf("%d to-device messages of 60 kB in one transaction, want 18 (just past 1 MiB)", n)
	}
}

func TestHeldBytesFollowWhatIsHeld(t *testing.T) {
	o := New(Options{}, 0)
	presence := func(seq uint64, status string) streams.EDUItem {
		return item(seq, TypePresence, "", fmt.Sprintf(`{"push":[{"presence":%q,"user_id":"@p:a"}]}`, status))
	}
	o.Add(presence(1, "online"), false)
	one := o.HeldBytes()
	if one <= len(`{"presence":"online","user_id":"@p:a"}`) {
		t.Fatalf("one presence held: %d bytes, want more than its content", one)
	}
	o.Add(presence(2, "unavailable"), false) // replaces the first
	if got, want := o.HeldBytes(), one+len("unavailable")-len("online"); got != want {
		t.Errorf("after a newer presence for the same user: %d bytes, want %d", got, want)
	}
	o.Add(toDevice(3), false) // must-deliver: not counted
	o.Add(typing(4, "@a:a", true), false)
	if o.HeldBytes() <= one {
		t.Errorf("presence and typing held: %d bytes, want more than presence alone (%d)", o.HeldBytes(), one)
	}
	b := o.Take(now)
	if o.HeldBytes() != 0 {
		t.Errorf("everything taken: %d bytes held, want 0", o.HeldBytes())
	}
	o.Return(b) // presence is held again, typing is not
	if got, want := o.HeldBytes(), one+len("unavailable")-len("online"); got != want {
		t.Errorf("after a given-up transaction: %d bytes, want %d (the presence again)", got, want)
	}
}

// TestPreparedUnitsSendWhatParsingPerDestinationSends: an EDU prepared
// once by the reader (and shared by its destinations) fills each
// destination's transactions exactly as one parsed by each outbox, and one
// destination's coalescing never changes another's.
func TestPreparedUnitsSendWhatParsingPerDestinationSends(t *testing.T) {
	items := func() []streams.EDUItem {
		return []streams.EDUItem{
			item(1, TypePresence, "", `{"push":[{"presence":"online","user_id":"@a:a"},{"presence":"online","user_id":"@b:a"}]}`),
			item(2, TypeReceipt, "", `{"!r:a":{"m.read":{"@a:a":{"data":{"ts":1},"event_ids":["$1"]},"@b:a":{"data":{"ts":2},"event_ids":["$2"]}}}}`),
			typing(3, "@a:a", true),
			item(4, "org.example.custom", "k", `{"n":1}`),
			item(5, TypePresence, "", `{"push":[{"presence":"offline","user_id":"@a:a"}]}`),
			typing(6, "@a:a", false),
			item(7, "org.example.custom", "", `{"n":2}`),
		}
	}
	parsed, first, second := New(Options{}, 0), New(Options{}, 0), New(Options{}, 0)
	for i, it := range items() {
		parsed.Add(it, false)
		prepared := it
		Prepare(prepared.EDU)
		if prepared.EDU.Units == nil {
			t.Fatalf("item %d (%s) was not prepared", i, it.EDU.Type)
		}
		first.Add(prepared, false)
		if i < 3 {
			second.Add(prepared, false) // shares the first's units
		}
	}
	want, got1 := parsed.Take(now), first.Take(now)
	if a, b := edus(got1), edus(want); a != b {
		t.Errorf("the prepared destination sent %s\nwant %s", a, b)
	}
	// The second destination kept the first three as they were: the
	// newer presence and typing the first coalesced did not reach it.
	got := second.Take(now)
	for _, e := range got.EDUs {
		if strings.Contains(string(e.Content), "offline") || strings.Contains(string(e.Content), `"typing":false`) {
			t.Errorf("the second destination sent %s, which only the first was given", e.Content)
		}
	}
	if len(got.EDUs) != 3 {
		t.Errorf("the second destination sent %d EDUs, want presence, receipt and typing", len(got.EDUs))
	}
}

func BenchmarkAddToManyDestinations(b *testing.B) {
	content := `{"!r:a":{"m.read":{"@a:a":{"data":{"ts":1},"event_ids":["$1"]}}}}`
	for _, prepare := range []bool{false, true} {
		b.Run(fmt.Sprintf("prepared=%v", prepare), func(b *testing.B) {
			outs := make([]*Outbox, 200)
			for i := range outs {
				outs[i] = New(Options{}, 0)
			}
			b.ReportAllocs()
			for n := 0; b.Loop(); n++ {
				it := item(uint64(n+1), TypeReceipt, "", content)
				if prepare {
					Prepare(it.EDU)
				}
				for _, o := range outs {
					o.Add(it, false)
				}
			}
		})
	}
}

func edus(b *Batch) string {
	var out []string
	for _, e := range b.EDUs {
		out = append(out, e.Type+" "+string(e.Content))
	}
	return strings.Join(out, "\n")
}
