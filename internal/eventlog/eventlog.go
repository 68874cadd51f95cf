// Package eventlog is fedsender's durable memory in JetStream: each
// destination's event log (state changes, with compare-and-swap on the
// subject's last sequence so that a replica that lost a partition cannot
// write), each destination's offset (last_successful_stream_ordering, in a KV
// bucket, only moved forward with compare-and-swap), and each partition's
// resume watermark in the PDU stream.
package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/edu"
	"github.com/fedsender/fedsender/streams"
)

// ErrConflict means another writer moved the log or key first: this replica
// no longer owns the destination's partition.
var ErrConflict = errors.New("eventlog: concurrent writer")

// Store reads and writes the destination logs, offsets and watermarks.
type Store struct {
	js         jetstream.JetStream
	events     jetstream.Stream
	offsets    jetstream.KeyValue
	eduOffsets jetstream.KeyValue
	chains     jetstream.KeyValue
	partitions jetstream.KeyValue
}

// Open binds to the streams and buckets (streams.Ensure creates them).
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	events, err := js.Stream(ctx, streams.EventStream)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", streams.EventStream, err)
	}
	offsets, err := js.KeyValue(ctx, streams.OffsetBucket)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", streams.OffsetBucket, err)
	}
	eduOffsets, err := js.KeyValue(ctx, streams.EDUOffsetBucket)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", streams.EDUOffsetBucket, err)
	}
	chains, err := js.KeyValue(ctx, streams.DeviceListBucket)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", streams.DeviceListBucket, err)
	}
	partitions, err := js.KeyValue(ctx, streams.PartitionBucket)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %s: %w", streams.PartitionBucket, err)
	}
	return &Store{js: js, events: events, offsets: offsets, eduOffsets: eduOffsets, chains: chains, partitions: partitions}, nil
}

// Append stores an event of a destination. expected is the sequence of the
// destination's previous event (0 for none); the new one is returned.
func (s *Store) Append(ctx context.Context, partition int, ev destination.Event, expected uint64) (uint64, error) {
	f, err := s.AppendAsync(partition, ev, expected)
	if err != nil {
		return 0, err
	}
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		return 0, classify(err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// AppendAsync is Append without waiting; resolve the future with AckResult.
func (s *Store) AppendAsync(partition int, ev destination.Event, expected uint64) (jetstream.PubAckFuture, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("eventlog: encode event: %w", err)
	}
	msg := nats.NewMsg(streams.EventSubject(partition, ev.State.Destination))
	msg.Data = data
	f, err := s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(expected))
	if err != nil {
		return nil, fmt.Errorf("eventlog: append: %w", err)
	}
	return f, nil
}

// AckResult waits for an async append and returns its sequence.
func AckResult(ctx context.Context, f jetstream.PubAckFuture) (uint64, error) {
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		return 0, classify(err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return fmt.Errorf("eventlog: %w", err)
}

// DecodeEvent decodes an event of the log from its subject and body. The
// subject names the destination, and wins over the body's state.
func DecodeEvent(subject string, data []byte) (destination.Event, error) {
	name, err := streams.DestinationFromEventSubject(subject)
	if err != nil {
		return destination.Event{}, fmt.Errorf("eventlog: %w", err)
	}
	var ev destination.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return destination.Event{}, fmt.Errorf("eventlog: event of %s: %w", name, err)
	}
	ev.State.Destination = name
	return ev, nil
}

// Loaded is a destination as the store remembers it.
type Loaded struct {
	State     destination.State
	EventSeq  uint64 // sequence of its newest event (0: none)
	OffsetRev uint64 // revision of its offset key (0: none)
	// EDUOffset is its EDU offset: every must-deliver EDU at or below it
	// in the EDU stream was acknowledged; EDUOffsetRev its key's revision.
	EDUOffset    uint64
	EDUOffsetRev uint64
}

// LoadAll returns every destination the store knows, by name: its newest
// event's state, with the offset from the offsets bucket when that is newer.
func (s *Store) LoadAll(ctx context.Context) (map[string]*Loaded, error) {
	return s.load(ctx, "fedsender.events.>", ">")
}

// LoadPartition is LoadAll for the destinations of one partition: what
// its new owner starts from.
func (s *Store) LoadPartition(ctx context.Context, partition int) (map[string]*Loaded, error) {
	return s.load(ctx, streams.EventFilter(partition), streams.OffsetFilter(partition))
}

// load reads the event logs matching events and the offsets whose keys
// match keys.
func (s *Store) load(ctx context.Context, events, keys string) (map[string]*Loaded, error) {
	out := make(map[string]*Loaded)
	if err := s.loadEvents(ctx, events, out); err != nil {
		return nil, err
	}
	if err := s.loadOffsets(ctx, s.offsets, keys, out, func(l *Loaded, off, rev uint64) {
		l.OffsetRev = rev
		l.State.Offset = max(l.State.Offset, off)
	}); err != nil {
		return nil, err
	}
	if err := s.loadOffsets(ctx, s.eduOffsets, keys, out, func(l *Loaded, off, rev uint64) {
		l.EDUOffset, l.EDUOffsetRev = off, rev
	}); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) loadEvents(ctx context.Context, filter string, out map[string]*Loaded) error {
	cons, err := s.events.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return fmt.Errorf("eventlog: read %s: %w", streams.EventStream, err)
	}
	defer s.events.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name)
	remaining := cons.CachedInfo().NumPending
	for remaining > 0 {
		batch, err := cons.Fetch(int(min(remaining, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("eventlog: read %s: %w", streams.EventStream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			ev, err := DecodeEvent(msg.Subject(), msg.Data())
			if err != nil {
				return err
			}
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("eventlog: event on %s: %w", msg.Subject(), err)
			}
			out[ev.State.Destination] = &Loaded{State: ev.State, EventSeq: md.Sequence.Stream}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("eventlog: read %s: %w", streams.EventStream, err)
		}
		if n == 0 {
			return fmt.Errorf("eventlog: read %s: no events for 5s with %d still pending", streams.EventStream, remaining)
		}
		remaining -= uint64(n)
	}
	return nil
}

// loadOffsets reads an offsets bucket into out with set.
func (s *Store) loadOffsets(ctx context.Context, kv jetstream.KeyValue, keys string, out map[string]*Loaded, set func(l *Loaded, off, rev uint64)) error {
	w, err := kv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("eventlog: read %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return nil // initial values done
			}
			dest, err := streams.DestinationFromOffsetKey(e.Key())
			if err != nil {
				return fmt.Errorf("eventlog: %w", err)
			}
			off, err := parseOffset(dest, e.Value())
			if err != nil {
				return err
			}
			l := out[dest]
			if l == nil {
				l = &Loaded{State: destination.State{Destination: dest}}
				out[dest] = l
			}
			set(l, off, e.Revision())
		}
	}
}

// LastEvent returns a destination's newest event and its sequence (a zero
// event and 0 when its log is empty): what an append's compare-and-swap
// found instead of the sequence it expected.
func (s *Store) LastEvent(ctx context.Context, partition int, dest string) (destination.Event, uint64, error) {
	m, err := s.events.GetLastMsgForSubject(ctx, streams.EventSubject(partition, dest))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return destination.Event{}, 0, nil
	}
	if err != nil {
		return destination.Event{}, 0, fmt.Errorf("eventlog: last event of %s: %w", dest, err)
	}
	ev, err := DecodeEvent(m.Subject, m.Data)
	return ev, m.Sequence, err
}

// Offset returns a destination's stored offset and its revision (0, 0 when
// none is stored).
func (s *Store) Offset(ctx context.Context, partition int, dest string) (uint64, uint64, error) {
	return getOffset(ctx, s.offsets, partition, dest)
}

// EDUOffset returns a destination's EDU offset and its revision, as Offset.
func (s *Store) EDUOffset(ctx context.Context, partition int, dest string) (uint64, uint64, error) {
	return getOffset(ctx, s.eduOffsets, partition, dest)
}

func getOffset(ctx context.Context, kv jetstream.KeyValue, partition int, dest string) (uint64, uint64, error) {
	e, err := kv.Get(ctx, streams.OffsetKey(partition, dest))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("eventlog: offset of %s: %w", dest, err)
	}
	off, err := parseOffset(dest, e.Value())
	return off, e.Revision(), err
}

// parseOffset reads an offset's value: the decimal sequence.
func parseOffset(dest string, val []byte) (uint64, error) {
	off, err := strconv.ParseUint(string(val), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("eventlog: offset of %s: %w", dest, err)
	}
	return off, nil
}

// PutOffset moves a destination's offset with compare-and-swap against
// rev (0: the key must not exist). The value is the decimal sequence, so
// `nats kv get fedsender-offsets <key>` reads it as is.
func (s *Store) PutOffset(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error) {
	return put(ctx, s.offsets, streams.OffsetKey(partition, dest), []byte(strconv.FormatUint(offset, 10)), rev)
}

// PutEDUOffset moves a destination's EDU offset, as PutOffset does.
func (s *Store) PutEDUOffset(ctx context.Context, partition int, dest string, offset, rev uint64) (uint64, error) {
	return put(ctx, s.eduOffsets, streams.OffsetKey(partition, dest), []byte(strconv.FormatUint(offset, 10)), rev)
}

// LoadChain returns what a destination was sent of a user's device list
// (empty when nothing).
func (s *Store) LoadChain(ctx context.Context, dest, user string) (edu.Chain, error) {
	var c edu.Chain
	e, err := s.chains.Get(ctx, streams.DeviceListKey(dest, user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("eventlog: device-list chain of %s for %s: %w", user, dest, err)
	}
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return c, fmt.Errorf("eventlog: device-list chain of %s for %s: %w", user, dest, err)
	}
	return c, nil
}

// SaveChain stores a destination's chain of a user's device list. Only the
// destination's actor writes it, after the destination acknowledged.
func (s *Store) SaveChain(ctx context.Context, dest, user string, c edu.Chain) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("eventlog: encode chain: %w", err)
	}
	if _, err := s.chains.Put(ctx, streams.DeviceListKey(dest, user), data); err != nil {
		return fmt.Errorf("eventlog: device-list chain of %s for %s: %w", user, dest, err)
	}
	return nil
}

// put creates key (rev 0) or moves it from revision rev: compare-and-swap
// either way.
func put(ctx context.Context, kv jetstream.KeyValue, key string, val []byte, rev uint64) (uint64, error) {
	var (
		n   uint64
		err error
	)
	if rev == 0 {
		n, err = kv.Create(ctx, key, val)
	} else {
		n, err = kv.Update(ctx, key, val, rev)
	}
	if err != nil {
		return 0, classify(err)
	}
	return n, nil
}

// Watermark is a partition's resume point: every PDU at or below Seq is done
// for every destination of the partition that is not catching up, and every
// EDU at or below EDUSeq (in the EDU stream) for every destination.
type Watermark struct {
	Seq    uint64 `json:"seq"`
	EDUSeq uint64 `json:"edu_seq,omitempty"`
	// EDUPending lists the destinations that were backing off with
	// must-deliver EDUs pending when EDUSeq passed them, with their EDU
	// offsets (FormatPending): their first actor after a start reads those
	// EDUs from the stream. A string, so that a watermark is comparable.
	EDUPending string `json:"edu_pending,omitempty"`
	Owner      string `json:"owner,omitempty"`
	At         int64  `json:"at"`
}

// LoadWatermark returns a partition's watermark and its revision (0, 0 if none).
func (s *Store) LoadWatermark(ctx context.Context, partition int) (Watermark, uint64, error) {
	e, err := s.partitions.Get(ctx, streams.PartitionKey(partition))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Watermark{}, 0, nil
	}
	if err != nil {
		return Watermark{}, 0, fmt.Errorf("eventlog: watermark of partition %d: %w", partition, err)
	}
	var w Watermark
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return Watermark{}, 0, fmt.Errorf("eventlog: watermark of partition %d: %w", partition, err)
	}
	return w, e.Revision(), nil
}

// PutWatermark stores a partition's watermark with compare-and-swap.
func (s *Store) PutWatermark(ctx context.Context, partition int, w Watermark, rev uint64) (uint64, error) {
	data, err := json.Marshal(w)
	if err != nil {
		return 0, fmt.Errorf("eventlog: encode watermark: %w", err)
	}
	return put(ctx, s.partitions, streams.PartitionKey(partition), data, rev)
}

// FormatPending encodes a watermark's EDUPending: "name=offset" pairs,
// sorted, separated by spaces (server names have neither).
func FormatPending(pending map[string]uint64) string {
	parts := make([]string, 0, len(pending))
	for name, off := range pending {
		parts = append(parts, name+"="+strconv.FormatUint(off, 10))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// ParsePending decodes a watermark's EDUPending; malformed pairs are
// skipped.
func ParsePending(s string) map[string]uint64 {
	out := map[string]uint64{}
	for _, part := range strings.Fields(s) {
		name, off, ok := strings.Cut(part, "=")
		if n, err := strconv.ParseUint(off, 10, 64); ok && err == nil {
			out[name] = n
		}
	}
	return out
}
