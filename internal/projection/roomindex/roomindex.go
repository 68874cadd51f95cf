package roomindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// histShift groups sequences by 1024 for the histogram that picks what to
// drop when the index is over its bound.
const histShift = 10

// Options configure an Index.
type Options struct {
	// JS reads the PDU stream for the backfill and its retention. Without
	// it, Run only prunes by MaxPairs and the index is ready at once.
	JS jetstream.JetStream
	// Through is the last sequence the backfill reads: the reader's start
	// minus one. PDUs after it come through Observe.
	Through uint64
	// MaxPairs bounds the (destination, room) pairs kept (default 2,000,000).
	MaxPairs int
	// PruneEvery is how often rooms whose newest PDU left the stream are
	// dropped (default 1 min).
	PruneEvery time.Duration
	// Origin is fedsender's own server_name, never a destination.
	Origin string
	Log    *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxPairs <= 0 {
		o.MaxPairs = 2_000_000
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Index is the rooms of every destination. Its methods are safe for
// concurrent use.
type Index struct {
	opts Options

	mu       sync.RWMutex
	roomNum  map[string]uint32 // room id → room number
	roomIDs  []string          // by room number; "" when free
	roomRefs []int32           // pairs per room number
	free     []uint32
	dests    map[string]map[uint32]uint64 // destination → room number → newest sequence
	pairs    int
	floor    uint64         // pairs below this sequence were dropped
	hist     map[uint64]int // sequence>>histShift → pairs
	ready    bool
}

// New returns an empty index; Run backfills and prunes it.
func New(opts Options) *Index {
	opts.setDefaults()
	return &Index{
		opts:    opts,
		roomNum: map[string]uint32{},
		dests:   map[string]map[uint32]uint64{},
		hist:    map[uint64]int{},
	}
}

// Observe adds a batch of PDUs read from the stream (ingest.Observer).
func (x *Index) Observe(items []streams.Item) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, it := range items {
		for _, d := range it.PDU.Destinations {
			x.add(d, it.PDU.RoomID, it.Seq)
		}
	}
	x.enforceBound()
}

// add records a PDU of room for dest at seq. x.mu must be held.
func (x *Index) add(dest, room string, seq uint64) {
	if seq < x.floor {
		return
	}
	rooms, ok := x.dests[dest]
	if !ok {
		rooms = map[uint32]uint64{}
		x.dests[dest] = rooms
	}
	rn, ok := x.roomNum[room]
	if !ok {
		rn = x.intern(room)
	}
	old, had := rooms[rn]
	switch {
	case had && seq <= old:
		return
	case had:
		x.hist[old>>histShift]--
	default:
		x.pairs++
		x.roomRefs[rn]++
	}
	rooms[rn] = seq
	x.hist[seq>>histShift]++
}

func (x *Index) intern(room string) uint32 {
	room = strings.Clone(room) // not a slice of a whole envelope
	var rn uint32
	if n := len(x.free); n > 0 {
		rn, x.free = x.free[n-1], x.free[:n-1]
		x.roomIDs[rn], x.roomRefs[rn] = room, 0
	} else {
		rn = uint32(len(x.roomIDs))
		x.roomIDs = append(x.roomIDs, room)
		x.roomRefs = append(x.roomRefs, 0)
	}
	x.roomNum[room] = rn
	return rn
}

// enforceBound drops the oldest pairs when there are more than MaxPairs,
// down to 90% of it. x.mu must be held.
func (x *Index) enforceBound() {
	if x.pairs <= x.opts.MaxPairs {
		return
	}
	keep := x.opts.MaxPairs * 9 / 10
	buckets := make([]uint64, 0, len(x.hist))
	for b, n := range x.hist {
		if n > 0 {
			buckets = append(buckets, b)
		}
	}
	slices.Sort(buckets)
	drop, floor := x.pairs-keep, x.floor
	for _, b := range buckets {
		if drop <= 0 {
			break
		}
		drop -= x.hist[b]
		floor = (b + 1) << histShift
	}
	x.opts.Log.Warn("roomindex: over its bound; dropping the rooms of the oldest PDUs",
		"max_pairs", x.opts.MaxPairs, "pairs", x.pairs, "below_sequence", floor)
	x.pruneBelow(floor)
}

// pruneBelow drops every pair older than floor. x.mu must be held.
func (x *Index) pruneBelow(floor uint64) {
	if floor <= x.floor {
		return
	}
	x.floor = floor
	for dest, rooms := range x.dests {
		for rn, seq := range rooms {
			if seq >= floor {
				continue
			}
			delete(rooms, rn)
			x.pairs--
			x.hist[seq>>histShift]--
			if x.roomRefs[rn]--; x.roomRefs[rn] == 0 {
				delete(x.roomNum, x.roomIDs[rn])
				x.roomIDs[rn] = ""
				x.free = append(x.free, rn)
			}
		}
		if len(rooms) == 0 {
			delete(x.dests, dest)
		}
	}
	for b, n := range x.hist {
		if n <= 0 || (b+1)<<histShift <= floor {
			delete(x.hist, b)
		}
	}
}

// Ready reports whether the backfill is done.
func (x *Index) Ready() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.ready
}

// Stats are the index's size.
type Stats struct {
	Destinations, Rooms, Pairs int
	// Floor is the oldest sequence still covered.
	Floor uint64
}

// Stats returns the index's size.
func (x *Index) Stats() Stats {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return Stats{Destinations: len(x.dests), Rooms: len(x.roomNum), Pairs: x.pairs, Floor: x.floor}
}

// Rooms returns a page of dest's rooms by room id; known reports whether
// the index has any room for it.
func (x *Index) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	x.mu.RLock()
	rooms, ok := x.dests[dest]
	if q.Limit == 0 || q.From >= int64(len(rooms)) { // nothing to copy or sort
		n := len(rooms)
		x.mu.RUnlock()
		return projection.RoomPage{Rooms: []projection.Room{}, Total: n}, ok
	}
	all := make([]projection.Room, 0, len(rooms))
	for rn, seq := range rooms {
		all = append(all, projection.Room{RoomID: x.roomIDs[rn], StreamOrdering: seq})
	}
	x.mu.RUnlock()
	return projection.SelectRooms(all, q), ok
}

// Run backfills the index from the PDU stream, then drops what leaves the
// stream, until ctx ends (then it returns nil).
func (x *Index) Run(ctx context.Context) error {
	if x.opts.JS == nil {
		x.setReady()
		<-ctx.Done()
		return nil
	}
	if err := x.backfill(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	x.setReady()
	tick := time.NewTicker(x.opts.PruneEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := x.pruneRetention(ctx); err != nil && ctx.Err() == nil {
				x.opts.Log.Warn("roomindex: reading the PDU stream's first sequence", "error", err)
			}
		}
	}
}

func (x *Index) setReady() {
	x.mu.Lock()
	x.ready = true
	x.mu.Unlock()
}

// pruneRetention drops the pairs whose PDU the stream no longer has.
func (x *Index) pruneRetention(ctx context.Context) error {
	s, err := x.opts.JS.Stream(ctx, streams.PDUStream)
	if err != nil {
		return err
	}
	first := s.CachedInfo().State.FirstSeq
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pruneBelow(first)
	return nil
}

// backfill reads the stream from its first message through opts.Through.
func (x *Index) backfill(ctx context.Context) error {
	s, err := x.opts.JS.Stream(ctx, streams.PDUStream)
	if err != nil {
		return fmt.Errorf("roomindex: %s: %w", streams.PDUStream, err)
	}
	st := s.CachedInfo().State
	through := min(x.opts.Through, st.LastSeq)
	if st.Msgs == 0 || through < st.FirstSeq {
		return nil
	}
	began := time.Now()
	cons, err := x.opts.JS.OrderedConsumer(ctx, streams.PDUStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   st.FirstSeq,
	})
	if err != nil {
		return fmt.Errorf("roomindex: read %s: %w", streams.PDUStream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("roomindex: read %s: %w", streams.PDUStream, err)
	}
	defer it.Stop()
	var n int
	batch := make([]backfilled, 0, 256)
	flush := func() {
		x.mu.Lock()
		for _, b := range batch {
			for _, d := range b.dests {
				x.add(d, b.room, b.seq)
			}
		}
		x.enforceBound()
		x.mu.Unlock()
		batch = batch[:0]
	}
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("roomindex: read %s: %w", streams.PDUStream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("roomindex: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > through {
			break
		}
		n++
		if room, dests, ok := decodeLight(msg.Data(), x.opts.Origin); ok {
			batch = append(batch, backfilled{seq: seq, room: room, dests: dests})
		}
		if len(batch) == cap(batch) {
			flush()
		}
		if seq == through || md.NumPending == 0 {
			break
		}
	}
	flush()
	x.opts.Log.Info("roomindex: backfilled the rooms of each destination", "pdus", n,
		"through_sequence", through, "took", time.Since(began).Round(time.Millisecond))
	return nil
}

type backfilled struct {
	seq   uint64
	room  string
	dests []string
}

// lightEnvelope is the part of an envelope the backfill reads; the PDU
// itself is skipped, not parsed into values.
type lightEnvelope struct {
	RoomID       string          `json:"room_id"`
	EventID      string          `json:"event_id"`
	PDU          json.RawMessage `json:"pdu"`
	Destinations []string        `json:"destinations"`
}

// errSkip marks an envelope the reader would have refused.
var errSkip = errors.New("roomindex: envelope refused")

// decodeLight returns the room and destinations of an envelope the reader
// would accept, as far as a check without canonicalising the PDU can tell,
// with the destinations the reader would deliver to.
func decodeLight(data []byte, origin string) (room string, dests []string, ok bool) {
	var env lightEnvelope
	if json.Unmarshal(data, &env) != nil || checkLight(env) != nil {
		return "", nil, false
	}
	dests, _ = streams.SplitDestinations(env.Destinations)
	if len(dests) == 0 {
		return "", nil, false
	}
	return env.RoomID, streams.DropOrigin(dests, origin), true
}

func checkLight(env lightEnvelope) error {
	switch {
	case env.RoomID == "" || env.RoomID[0] != '!' || len(env.RoomID) > streams.MaxIDLength,
		env.EventID == "" || env.EventID[0] != '$' || len(env.EventID) > streams.MaxIDLength,
		len(env.PDU) == 0 || env.PDU[0] != '{':
		return errSkip
	}
	return nil
}
