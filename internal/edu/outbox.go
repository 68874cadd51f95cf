package edu

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/streams"
)

// Limits of one transaction's EDUs, as Synapse has them.
const (
	MaxEDUs          = 100 // EDUs per transaction
	MaxPresenceUsers = 50  // users in the one m.presence EDU
	MaxReceiptEDUs   = 5   // m.receipt EDUs per transaction
	// ReservedForDeviceLists is what to-device leaves of the budget.
	ReservedForDeviceLists = 10
	// ReservedForOthers is what device lists leave to other types and
	// typing when some wait, so that a burst never starves them.
	ReservedForOthers = 5
	// MaxEDUBytes is a soft bound on the EDU content of one transaction:
	// EDUs are taken while it is not reached (at least one). A hundred
	// to-device messages of 64 KiB would make a 6 MiB request, which some
	// servers refuse, and which holds the PDUs in the same transaction back.
	MaxEDUBytes = 1 << 20
)

// Why a droppable EDU was not sent (the reason of Options.Dropped).
const (
	DroppedBackoff  = "backoff"  // typing for a destination in backoff
	DroppedExpired  = "expired"  // typing older than TypingTTL
	DroppedOverflow = "overflow" // over MaxHeld while the destination was down
)

// Options configure an outbox.
type Options struct {
	// MaxHeld bounds the droppable entries held, all kinds together; past
	// it the oldest of the kind is dropped. Default 10,000.
	MaxHeld int
	// TypingTTL: typing older than this is not sent. Default 30 s.
	TypingTTL time.Duration
	// Coalesced and Dropped, if set, count droppable EDUs replaced by a
	// newer one with the same key, and those not sent.
	Coalesced func(eduType string)
	Dropped   func(eduType, reason string)
}

// Outbox is one destination's EDUs not yet acknowledged. It is not safe
// for concurrent use: its destination actor owns it.
type Outbox struct {
	opts    Options
	must    []streams.EDUItem // must-deliver, unacknowledged, in stream order
	through uint64            // the highest EDU sequence handed over
	held    [numKinds]*keyed  // droppable, by kind
	heldN   int
	heldB   int // an estimate of the memory the droppable entries hold
	// restoring: must-deliver EDUs from Done+1 on are being read again
	// (Restore), so Done may not pass it.
	restoring bool
	floor     uint64
}

// New returns an empty outbox; done is the destination's EDU offset (every
// must-deliver EDU at or below it was acknowledged).
func New(opts Options, done uint64) *Outbox {
	if opts.MaxHeld <= 0 {
		opts.MaxHeld = 10_000
	}
	if opts.TypingTTL <= 0 {
		opts.TypingTTL = 30 * time.Second
	}
	o := &Outbox{opts: opts, through: done}
	for k := range o.held {
		o.held[k] = newKeyed()
	}
	return o
}

// Done is the EDU offset: every must-deliver EDU at or below it is
// acknowledged, and every droppable one was handed over.
func (o *Outbox) Done() uint64 {
	done := o.through
	if len(o.must) > 0 {
		done = o.must[0].Seq - 1
	}
	if o.restoring {
		done = min(done, o.floor)
	}
	return done
}

// Restoring marks the must-deliver EDUs after Done as being read again
// from the stream (the actor holding them failed): Done stays where it is
// until Restore hands them back.
func (o *Outbox) Restoring() {
	o.floor, o.restoring = o.Done(), true
}

// Restore takes back the must-deliver EDUs read again, in stream order,
// before those handed over since.
func (o *Outbox) Restore(items []streams.EDUItem) {
	o.restoring = false
	var back []streams.EDUItem
	for _, it := range items {
		if it.Seq > o.floor && KindOf(it.EDU.Type).MustDeliver() {
			back = append(back, it)
			o.through = max(o.through, it.Seq)
		}
	}
	o.must = append(back, o.must...)
	slices.SortStableFunc(o.must, func(a, b streams.EDUItem) int { return cmp.Compare(a.Seq, b.Seq) })
	o.must = slices.CompactFunc(o.must, func(a, b streams.EDUItem) bool { return a.Seq == b.Seq })
}

// Pending counts the must-deliver EDUs not yet acknowledged.
func (o *Outbox) Pending() int { return len(o.must) }

// Held counts the droppable entries waiting.
func (o *Outbox) Held() int { return o.heldN }

// HeldBytes estimates the memory the droppable entries hold: their keys,
// contents and a fixed cost of bookkeeping each. Must-deliver EDUs are not
// counted: the stream keeps them.
func (o *Outbox) HeldBytes() int { return o.heldB }

// Empty reports whether there is nothing to send.
func (o *Outbox) Empty() bool { return len(o.must) == 0 && o.heldN == 0 }

// Ready reports whether something is worth a transaction at now (ms):
// anything but droppable EDUs paced to later (which go with any
// transaction). next is the earliest time a paced one becomes due (0:
// none waits).
func (o *Outbox) Ready(now int64) (ready bool, next int64) {
	if len(o.must) > 0 {
		return true, 0
	}
	for _, k := range o.held {
		for el := k.order.Front(); el != nil; el = el.Next() {
			due := el.Value.(*entry).due
			if due <= now {
				return true, 0
			}
			if next == 0 || due < next {
				next = due
			}
		}
	}
	return false, next
}

// Add takes an EDU for the destination. EDUs come in stream order; one at
// or below a sequence already handed over is a replay and ignored. Typing
// for a destination in backoff is dropped.
func (o *Outbox) Add(it streams.EDUItem, failing bool) {
	if it.Seq <= o.through {
		return
	}
	o.through = it.Seq
	kind := KindOf(it.EDU.Type)
	if kind.MustDeliver() {
		o.must = append(o.must, it)
		return
	}
	if kind == Typing && failing {
		o.drop(it.EDU.Type, DroppedBackoff)
		return
	}
	for _, e := range entriesOf(it) {
		o.hold(e)
	}
}

func (o *Outbox) hold(e *entry) {
	k := o.held[e.kind]
	if old := k.byKey[e.key]; old != nil {
		// The newer replaces it, in its place in the queue, and is due when
		// the earlier of the two was.
		if old.due > 0 && (e.due == 0 || e.due < old.due) {
			old.due = e.due
		}
		o.heldB -= old.size()
		old.seq, old.ts, old.content, old.parts, old.eduType = e.seq, e.ts, e.content, e.parts, e.eduType
		o.heldB += old.size()
		o.count(o.opts.Coalesced, e.eduType)
		return
	}
	if o.heldN >= o.opts.MaxHeld {
		o.evict(e.kind)
	}
	e.elem = k.order.PushBack(e)
	k.byKey[e.key] = e
	o.heldN++
	o.heldB += e.size()
}

// evict drops the oldest entry of kind, or of the largest kind when kind
// has none.
func (o *Outbox) evict(kind Kind) {
	if o.held[kind].len() == 0 {
		for k := range o.held {
			if o.held[k].len() > o.held[kind].len() {
				kind = Kind(k)
			}
		}
	}
	if e := o.held[kind].front(); e != nil {
		o.unhold(e)
		o.drop(e.eduType, DroppedOverflow)
	}
}

func (o *Outbox) unhold(e *entry) {
	o.held[e.kind].remove(e)
	o.heldN--
	o.heldB -= e.size()
}

func (o *Outbox) drop(eduType, reason string) {
	if o.opts.Dropped != nil {
		o.opts.Dropped(eduType, reason)
	}
}

func (o *Outbox) count(f func(string), eduType string) {
	if f != nil {
		f(eduType)
	}
}

// DropTyping drops the typing notifications held: the destination went
// into backoff, and typing is only worth sending now.
func (o *Outbox) DropTyping() {
	k := o.held[Typing]
	for e := k.front(); e != nil; e = k.front() {
		o.unhold(e)
		o.drop(e.eduType, DroppedBackoff)
	}
}

// Out is one EDU of a transaction.
type Out struct {
	Type    string
	Content []byte // canonical JSON
	Seq     uint64 // must-deliver: its stream sequence
}

// JSON is the EDU as the transaction carries it, in canonical JSON.
func (e Out) JSON() []byte {
	b := make([]byte, 0, len(e.Content)+len(e.Type)+32)
	b = append(b, `{"content":`...)
	b = append(b, e.Content...)
	b = append(b, `,"edu_type":`...)
	b = canonicaljson.AppendString(b, e.Type)
	return append(b, '}')
}

// Batch is the EDUs of one transaction.
type Batch struct {
	EDUs []Out
	// Seqs are the EDU stream sequences the batch carries, ascending: with
	// the PDUs', they make the transaction id.
	Seqs []uint64
	TS   int64 // the newest EDU's stream time, ms
	// Counts is the EDUs by type.
	Counts map[string]int
	bytes  int // content taken so far
	must   []uint64
	held   []*entry
}

// full reports whether the batch holds MaxEDUBytes of content.
func (b *Batch) full() bool { return b.bytes >= MaxEDUBytes }

// Take fills a transaction's EDUs, in Synapse's order; nil when there is
// nothing to send. The batch stays the destination's until Acked (the
// transaction succeeded) or Returned (it was given up).
func (o *Outbox) Take(now time.Time) *Batch {
	if o.Empty() {
		return nil
	}
	b := &Batch{Counts: map[string]int{}}
	budget := MaxEDUs
	budget -= o.takePresence(b)
	budget -= o.takeReceipts(b, budget)
	budget -= o.takeMust(b, ToDevice, budget-ReservedForDeviceLists)
	reserve := 0
	if o.held[Other].len()+o.held[Typing].len() > 0 {
		reserve = ReservedForOthers
	}
	budget -= o.takeMust(b, DeviceList, budget-reserve)
	budget -= o.takeSingles(b, Other, budget, now)
	o.takeSingles(b, Typing, budget, now)
	if len(b.EDUs) == 0 {
		return nil
	}
	slices.Sort(b.Seqs)
	b.Seqs = slices.Compact(b.Seqs)
	return b
}

func (b *Batch) add(out Out, seq uint64, ts int64) {
	b.EDUs = append(b.EDUs, out)
	b.bytes += len(out.Content)
	b.Seqs = append(b.Seqs, seq)
	b.TS = max(b.TS, ts)
	b.Counts[out.Type]++
}

func (o *Outbox) takeMust(b *Batch, kind Kind, budget int) int {
	n := 0
	for _, it := range o.must {
		if n >= budget || b.full() {
			break
		}
		if KindOf(it.EDU.Type) != kind {
			continue
		}
		b.add(Out{Type: it.EDU.Type, Content: it.EDU.Content, Seq: it.Seq}, it.Seq, it.TS)
		b.must = append(b.must, it.Seq)
		n++
	}
	return n
}

// takeSingles takes typing or other types, one EDU per entry.
func (o *Outbox) takeSingles(b *Batch, kind Kind, budget int, now time.Time) int {
	k, n := o.held[kind], 0
	for e := k.front(); e != nil && n < budget && !b.full(); e = k.front() {
		o.unhold(e)
		if kind == Typing && now.Sub(time.UnixMilli(e.ts)) > o.opts.TypingTTL {
			o.drop(e.eduType, DroppedExpired)
			continue
		}
		b.add(Out{Type: e.eduType, Content: e.content}, e.seq, e.ts)
		b.held = append(b.held, e)
		n++
	}
	return n
}

// takePresence merges the oldest users' presence into one m.presence EDU.
func (o *Outbox) takePresence(b *Batch) int {
	k := o.held[Presence]
	var push [][]byte
	var seqs []uint64
	var ts int64
	for e := k.front(); e != nil; e = k.front() {
		if len(push) > 0 && len(push)+len(e.parts) > MaxPresenceUsers {
			break
		}
		o.unhold(e)
		for _, p := range e.parts {
			push = append(push, p.raw)
		}
		seqs, ts = append(seqs, e.seq), max(ts, e.ts)
		b.held = append(b.held, e)
	}
	if len(push) == 0 {
		return 0
	}
	content := []byte(`{"push":[`)
	for i, p := range push {
		if i > 0 {
			content = append(content, ',')
		}
		content = append(content, p...)
	}
	content = append(content, "]}"...)
	b.add(Out{Type: TypePresence, Content: canonical(content)}, seqs[0], ts)
	b.Seqs = append(b.Seqs, seqs[1:]...)
	return 1
}

type receiptEDU map[string]map[string]map[string]json.RawMessage

func (r receiptEDU) has(p part) bool {
	_, ok := r[p.room][p.rtype][p.user]
	return ok
}

func (r receiptEDU) put(p part) {
	if r[p.room] == nil {
		r[p.room] = map[string]map[string]json.RawMessage{}
	}
	if r[p.room][p.rtype] == nil {
		r[p.room][p.rtype] = map[string]json.RawMessage{}
	}
	r[p.room][p.rtype][p.user] = p.raw
}

// takeReceipts merges receipts into at most MaxReceiptEDUs m.receipt EDUs;
// a receipt goes into the first EDU without one for the same room, type
// and user.
func (o *Outbox) takeReceipts(b *Batch, budget int) int {
	k := o.held[Receipt]
	var edus []receiptEDU
	var seqs []uint64
	var ts int64
	limit := min(MaxReceiptEDUs, budget)
next:
	for e := k.front(); e != nil; e = k.front() {
		for _, r := range edus {
			if !slices.ContainsFunc(e.parts, r.has) {
				o.takeReceipt(e, r, b)
				seqs, ts = append(seqs, e.seq), max(ts, e.ts)
				continue next
			}
		}
		if len(edus) == limit {
			break
		}
		edus = append(edus, receiptEDU{})
		o.takeReceipt(e, edus[len(edus)-1], b)
		seqs, ts = append(seqs, e.seq), max(ts, e.ts)
	}
	for i, r := range edus {
		content, _ := json.Marshal(r) // maps of strings and raw JSON
		b.add(Out{Type: TypeReceipt, Content: canonical(content)}, seqs[0], ts)
		if i == 0 {
			b.Seqs = append(b.Seqs, seqs[1:]...)
		}
	}
	return len(edus)
}

func (o *Outbox) takeReceipt(e *entry, r receiptEDU, b *Batch) {
	o.unhold(e)
	for _, p := range e.parts {
		r.put(p)
	}
	b.held = append(b.held, e)
}

// canonical re-encodes JSON fedsender assembled from canonical pieces
// (validated on ingest, so it does not fail: were it to, the assembly is
// sent as it is, and the signature covers that).
func canonical(b []byte) []byte {
	if c, err := canonicaljson.Canonicalize(b); err == nil {
		return c
	}
	return b
}

// Acked records that the destination acknowledged the batch, and reports
// whether it carried must-deliver EDUs.
func (o *Outbox) Acked(b *Batch) bool {
	if len(b.must) == 0 {
		return false
	}
	sent := make(map[uint64]struct{}, len(b.must))
	for _, s := range b.must {
		sent[s] = struct{}{}
	}
	o.must = slices.DeleteFunc(o.must, func(it streams.EDUItem) bool {
		_, ok := sent[it.Seq]
		return ok
	})
	return true
}

// Return gives back a batch that was not acknowledged and will not be
// retried (the transaction was given up): its must-deliver EDUs are still
// held; its droppable ones are held again unless a newer one with the same
// key came meanwhile, or they are typing (not worth sending late).
func (o *Outbox) Return(b *Batch) {
	for i := len(b.held) - 1; i >= 0; i-- {
		e := b.held[i]
		k := o.held[e.kind]
		switch {
		case e.kind == Typing:
			o.drop(e.eduType, DroppedExpired)
		case k.byKey[e.key] != nil:
			o.count(o.opts.Coalesced, e.eduType)
		default:
			if o.heldN >= o.opts.MaxHeld {
				o.drop(e.eduType, DroppedOverflow)
				continue
			}
			e.elem = k.order.PushFront(e)
			k.byKey[e.key] = e
			o.heldN++
			o.heldB += e.size()
		}
	}
}

// String describes the outbox for logs.
func (o *Outbox) String() string {
	return strconv.Itoa(len(o.must)) + " must-deliver, " + strconv.Itoa(o.heldN) + " droppable"
}
