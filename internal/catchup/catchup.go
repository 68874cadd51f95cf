// Package catchup finds what a destination missed while its in-memory queue
// was dropped, by reading the PDU stream from the destination's offset: every
// pending PDU when there are few, otherwise the newest PDU of each room
// (oldest room first), which is what a Matrix server needs to catch up and
// backfill the rest.
package catchup

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
)

// Result is what a scan found.
type Result struct {
	// Through is the last stream sequence the scan covered: every PDU for
	// the destination up to it is in Items (or superseded, with Newest).
	Through uint64
	// Exact: Items holds every pending PDU up to the stream's end, in order.
	// Otherwise there were more than the limit: with Newest, Items holds the
	// newest PDU of each room, oldest first; without, Items holds the first
	// limit PDUs in order and Through is the last of them (read on from
	// there).
	Exact  bool
	Newest bool
	Items  []streams.Item
}

// Scanner reads the PDU stream.
type Scanner struct {
	js jetstream.JetStream
}

// New returns a scanner of the PDU stream.
func New(js jetstream.JetStream) *Scanner { return &Scanner{js: js} }

// destinationsOnly decodes just what a scan needs to skip a PDU.
type destinationsOnly struct {
	RoomID       string   `json:"room_id"`
	Destinations []string `json:"destinations"`
}

// Scan reads the stream from sequence from to its current end and returns the
// PDUs pending for dest. When more than limit are pending it returns, with
// newest, only the newest of each room; without, the first limit PDUs.
func (s *Scanner) Scan(ctx context.Context, dest string, from uint64, limit int, newest bool) (Result, error) {
	stream, err := s.js.Stream(ctx, streams.PDUStream)
	if err != nil {
		return Result{}, fmt.Errorf("catchup: %w", err)
	}
	last := stream.CachedInfo().State.LastSeq
	if from < 1 {
		from = 1
	}
	res := Result{Through: last, Exact: true}
	if from > last {
		res.Through = from - 1
		return res, nil
	}
	cons, err := s.js.OrderedConsumer(ctx, streams.PDUStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return Result{}, fmt.Errorf("catchup: %w", err)
	}
	latest := map[string]streams.Item{}
	iter, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return Result{}, fmt.Errorf("catchup: %w", err)
	}
	defer iter.Stop()
	for {
		msg, err := iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			return Result{}, fmt.Errorf("catchup: read %s: %w", streams.PDUStream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return Result{}, fmt.Errorf("catchup: %w", err)
		}
		seq := md.Sequence.Stream
		if s.addIfFor(dest, msg.Data(), seq, md.Timestamp.UnixMilli(), &res, latest) && len(res.Items) > limit {
			res.Exact = false
			if !newest {
				// A page of limit PDUs; the caller reads on after it.
				res.Items = res.Items[:limit]
				res.Through = res.Items[limit-1].Seq
				return res, nil
			}
			res.Newest = true
			res.Items = nil
		}
		if seq >= last {
			break
		}
	}
	if res.Newest {
		res.Items = make([]streams.Item, 0, len(latest))
		for _, it := range latest {
			res.Items = append(res.Items, it)
		}
		slices.SortFunc(res.Items, func(a, b streams.Item) int { return cmpSeq(a.Seq, b.Seq) })
	}
	return res, nil
}

// addIfFor records the PDU if it is for dest (a normalised name, as the
// reader hands out), as the reader reads the envelope's destinations;
// invalid envelopes (already dead-lettered by the reader) are skipped.
func (s *Scanner) addIfFor(dest string, data []byte, seq uint64, ts int64, res *Result, latest map[string]streams.Item) bool {
	var d destinationsOnly
	// A cheap look first: most PDUs are for other destinations.
	if json.Unmarshal(data, &d) != nil || !slices.ContainsFunc(d.Destinations, func(n string) bool { return strings.EqualFold(n, dest) }) {
		return false
	}
	pdu, err := streams.DecodePDU(data)
	if err != nil || !slices.Contains(pdu.Destinations, dest) {
		return false
	}
	it := streams.Item{Seq: seq, TS: ts, PDU: pdu}
	latest[pdu.RoomID] = it
	if !res.Newest {
		res.Items = append(res.Items, it)
	}
	return true
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
