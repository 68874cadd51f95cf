package eventlog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
)

func newStore(t *testing.T) *eventlog.Store {
	t.Helper()
	_, js, _ := projectiontest.JetStream(t)
	s, err := eventlog.Open(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEventsAreFencedByCompareAndSwap(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	st := destination.State{Destination: "remote.example:8448"}
	seq1, err := s.Append(ctx, 3, st.Record(destination.Event{Type: destination.Failed, At: 1, Interval: 600000}), 0)
	if err != nil {
		t.Fatal(err)
	}
	// A second writer that still believes the log is empty is refused.
	if _, err := s.Append(ctx, 3, st.Record(destination.Event{Type: destination.Reset, At: 2}), 0); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("append with a stale expected sequence: %v, want ErrConflict", err)
	}
	seq2, err := s.Append(ctx, 3, st.Record(destination.Event{Type: destination.Recovered, At: 3, Offset: 42}), seq1)
	if err != nil {
		t.Fatalf("append after the right sequence: %v", err)
	}
	loaded, err := s.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := loaded["remote.example:8448"]
	if got == nil || got.EventSeq != seq2 || got.State.Offset != 42 || got.State.Failing() {
		t.Fatalf("loaded %+v; want the newest event's state (offset 42, not failing) at sequence %d", got, seq2)
	}
}

func TestOffsetsMoveOnlyWithTheRightRevision(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	rev, err := s.PutOffset(ctx, 1, "a.example", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutOffset(ctx, 1, "a.example", 5, 0); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("creating an existing offset: %v, want ErrConflict", err)
	}
	if _, err := s.PutOffset(ctx, 1, "a.example", 20, rev+7); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("moving an offset with a wrong revision: %v, want ErrConflict", err)
	}
	if _, err := s.PutOffset(ctx, 1, "a.example", 20, rev); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.LoadAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := loaded["a.example"]; l == nil || l.State.Offset != 20 {
		t.Fatalf("loaded %+v, want offset 20", l)
	}
}

func TestWatermarkCompareAndSwap(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if w, rev, err := s.LoadWatermark(ctx, 7); err != nil || rev != 0 || w.Seq != 0 {
		t.Fatalf("fresh watermark: %+v rev %d err %v", w, rev, err)
	}
	rev, err := s.PutWatermark(ctx, 7, eventlog.Watermark{Seq: 100, Owner: "a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutWatermark(ctx, 7, eventlog.Watermark{Seq: 200, Owner: "b"}, 0); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("second owner's watermark: %v, want ErrConflict", err)
	}
	if w, got, err := s.LoadWatermark(ctx, 7); err != nil || got != rev || w.Seq != 100 || w.Owner != "a" {
		t.Fatalf("watermark %+v rev %d err %v; want seq 100 by a at rev %d", w, got, err, rev)
	}
}

func TestPendingRoundTrips(t *testing.T) {
	in := map[string]uint64{"matrix.org": 12, "[::1]:8448": 3}
	s := eventlog.FormatPending(in)
	if s != "[::1]:8448=3 matrix.org=12" {
		t.Errorf("FormatPending = %q", s)
	}
	if out := eventlog.ParsePending(s); len(out) != 2 || out["matrix.org"] != 12 || out["[::1]:8448"] != 3 {
		t.Errorf("ParsePending = %v", out)
	}
	if eventlog.FormatPending(nil) != "" || len(eventlog.ParsePending("")) != 0 {
		t.Error("empty")
	}
}
