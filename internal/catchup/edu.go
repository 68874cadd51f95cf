package catchup

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/edu"
	"github.com/fedsender/fedsender/streams"
)

// ScanEDUs reads the EDU stream from sequence from through sequence through
// and returns the must-deliver EDUs for dest, in order: what a destination
// actor that failed held in memory and has to hold again. Droppable EDUs
// are not worth sending late; invalid envelopes (dead-lettered by the
// reader) are skipped.
func (s *Scanner) ScanEDUs(ctx context.Context, dest string, from, through uint64) ([]streams.EDUItem, error) {
	stream, err := s.js.Stream(ctx, streams.EDUStream)
	if err != nil {
		return nil, fmt.Errorf("catchup: %w", err)
	}
	from, through = max(from, 1), min(through, stream.CachedInfo().State.LastSeq)
	if from > through {
		return nil, nil
	}
	cons, err := s.js.OrderedConsumer(ctx, streams.EDUStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return nil, fmt.Errorf("catchup: %w", err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("catchup: %w", err)
	}
	defer iter.Stop()
	var out []streams.EDUItem
	for {
		msg, err := iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("catchup: read %s: %w", streams.EDUStream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("catchup: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > through {
			return out, nil
		}
		if e := mustDeliverFor(dest, msg.Data()); e != nil {
			out = append(out, streams.EDUItem{Seq: seq, TS: md.Timestamp.UnixMilli(), EDU: e})
		}
		if seq == through {
			return out, nil
		}
	}
}

// mustDeliverFor decodes an EDU envelope if it is a must-deliver EDU for
// dest, as the reader reads it; nil otherwise.
func mustDeliverFor(dest string, data []byte) *streams.EDU {
	var d struct {
		EDUType      string   `json:"edu_type"`
		Destinations []string `json:"destinations"`
	}
	// A cheap look first: most EDUs are for other destinations, or droppable.
	if json.Unmarshal(data, &d) != nil || !edu.KindOf(d.EDUType).MustDeliver() ||
		!slices.ContainsFunc(d.Destinations, func(n string) bool { return strings.EqualFold(n, dest) }) {
		return nil
	}
	e, err := streams.DecodeEDU(data)
	if err != nil || !slices.Contains(e.Destinations, dest) {
		return nil
	}
	return e
}
