package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
)

// pduFactory makes envelopes for one set of destinations: a PDU of about
// size bytes (a plausible m.room.message, keys in no particular order) and
// the destination list, which is the same for every PDU.
type pduFactory struct {
	dests   []byte // the JSON array of destinations
	pad     string
	senders int // PDU n is sent by user n % senders; 0: all by @bench
}

func newPDUFactory(dests []string, size int) *pduFactory {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range dests {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(d))
	}
	b.WriteByte(']')
	f := &pduFactory{dests: []byte(b.String())}
	base := len(f.pdu(nil, "$x_0000000", "!room00000:origin.test", 0))
	if n := size - base; n > 0 {
		const text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. "
		f.pad = strings.Repeat(text, n/len(text)+1)[:n]
	}
	return f
}

func (f *pduFactory) pdu(dst []byte, eventID, roomID string, n int) []byte {
	dst = append(dst, `{"type":"m.room.message","room_id":"`...)
	dst = append(dst, roomID...)
	dst = append(dst, `","sender":"`...)
	dst = append(dst, f.sender(n)...)
	dst = append(dst, `","event_id":"`...)
	dst = append(dst, eventID...)
	dst = append(dst, `","origin":"origin.test","origin_server_ts":`...)
	dst = strconv.AppendInt(dst, time.Now().UnixMilli(), 10)
	dst = append(dst, `,"depth":`...)
	dst = strconv.AppendInt(dst, int64(n+1), 10)
	dst = append(dst, `,"content":{"msgtype":"m.text","body":"`...)
	dst = append(dst, f.pad...)
	dst = append(dst, `"},"prev_events":["$prevAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],`...)
	dst = append(dst, `"auth_events":["$authAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","$authBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB","$authCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"],`...)
	dst = append(dst, `"hashes":{"sha256":"hHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHhHh"},`...)
	dst = append(dst, `"signatures":{"origin.test":{"ed25519:bench":"sSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsSsS"}},`...)
	dst = append(dst, `"unsigned":{"age_ts":0}}`...)
	return dst
}

// sender is the user who sent PDU n.
func (f *pduFactory) sender(n int) string {
	if f.senders == 0 {
		return "@bench:origin.test"
	}
	return "@bench" + strconv.Itoa(n%f.senders) + ":origin.test"
}

// envelope returns the envelope of PDU n of a series (tag) in room roomID.
func (f *pduFactory) envelope(tag string, n int, roomID string) []byte {
	eventID := "$" + tag + "_" + strconv.Itoa(n)
	b := make([]byte, 0, 256+len(f.pad)+len(f.dests)+512)
	b = append(b, `{"room_id":"`...)
	b = append(b, roomID...)
	b = append(b, `","event_id":"`...)
	b = append(b, eventID...)
	b = append(b, `","pdu":`...)
	b = f.pdu(b, eventID, roomID, n)
	b = append(b, `,"destinations":`...)
	b = append(b, f.dests...)
	return append(b, '}')
}

// eventNumber returns n of an event id "$tag_n", or -1 when the id is not of
// that series.
func eventNumber(eventID, tag string) int {
	rest, ok := strings.CutPrefix(eventID, "$"+tag+"_")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return -1
	}
	return n
}

func roomName(i int) string { return fmt.Sprintf("!room%05d:origin.test", i) }

// ackChecker waits for the acknowledgements of asynchronous publishes and
// keeps the first failure.
type ackChecker struct {
	futures chan jetstream.PubAckFuture
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

func newAckChecker() *ackChecker {
	c := &ackChecker{futures: make(chan jetstream.PubAckFuture, 16384), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for f := range c.futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				c.setErr(fmt.Errorf("publish: %w", err))
			}
		}
	}()
	return c
}

func (c *ackChecker) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *ackChecker) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// finish waits for every acknowledgement and returns the first failure.
func (c *ackChecker) finish() error {
	close(c.futures)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		return errors.New("publish acknowledgements still missing after 30s")
	}
	return c.failed()
}

// feeder publishes envelopes as fast as the receivers keep up: it never runs
// more than lead PDUs ahead of what every receiver has acknowledged.
type feeder struct {
	pub       *streams.Publisher
	acked     func() int64
	lead      int64
	make      func(n int) []byte
	acks      *ackChecker
	mu        sync.Mutex
	published int64
}

func (f *feeder) count() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published
}

// run publishes until ctx ends.
func (f *feeder) run(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		for int64(n)-f.acked() >= f.lead {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		fut, err := f.pub.PublishAsync(f.make(n))
		if err != nil {
			f.acks.setErr(fmt.Errorf("publish: %w", err))
			return
		}
		f.acks.futures <- fut
		f.mu.Lock()
		f.published++
		f.mu.Unlock()
	}
}

// windowed measures a counter's rate over n windows of length win after a
// warm-up. It fails when the counter stops moving for stallAfter while
// pending says work is outstanding, or when failed reports an error.
type windowed struct {
	count      func() int64
	pending    func() bool
	failed     func() error
	diagnose   func() string
	stallAfter time.Duration
}

type rates struct {
	Mean    float64   `json:"mean"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Windows []float64 `json:"windows"`
	Count   int64     `json:"counted"`
	Seconds float64   `json:"seconds"`
}

func (w windowed) measure(ctx context.Context, warmup, win time.Duration, n int) (rates, error) {
	last, lastAt := w.count(), time.Now()
	wait := func(until time.Time) error {
		for {
			now := time.Now()
			if !now.Before(until) {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(100*time.Millisecond, until.Sub(now))):
			}
			if err := w.failed(); err != nil {
				return err
			}
			if c := w.count(); c != last {
				last, lastAt = c, time.Now()
			} else if w.pending() && time.Since(lastAt) > w.stallAfter {
				return fmt.Errorf("deliveries stalled: no receiver accepted a PDU for %v; %s", w.stallAfter, w.diagnose())
			}
		}
	}
	if err := wait(time.Now().Add(warmup)); err != nil {
		return rates{}, err
	}
	var r rates
	c0, t0 := w.count(), time.Now()
	c, t := c0, t0
	for i := range n {
		if err := wait(t0.Add(time.Duration(i+1) * win)); err != nil {
			return rates{}, err
		}
		c1, t1 := w.count(), time.Now()
		rate := float64(c1-c) / t1.Sub(t).Seconds()
		r.Windows = append(r.Windows, rate)
		if i == 0 || rate < r.Min {
			r.Min = rate
		}
		r.Max = max(r.Max, rate)
		c, t = c1, t1
	}
	r.Count = c - c0
	r.Seconds = t.Sub(t0).Seconds()
	r.Mean = float64(r.Count) / r.Seconds
	return r, nil
}

// waitFor polls cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
