package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// catchupResult is how long a destination back from an outage took to get
// the newest PDU of every pending room.
type catchupResult struct {
	Rooms        int     `json:"rooms"`
	MaxPending   int     `json:"max_pending"`
	Seconds      float64 `json:"catchup_seconds"`
	Transactions int     `json:"transactions"`
	Requests     int     `json:"requests"`
	Checks       checks  `json:"checks"`
}

// runCatchup stops a receiver, publishes one PDU in each of p.cuRooms rooms
// to it alone (more than queue.max_pending, so its queue overflows into
// catch-up while it backs off), then restarts it, resets the destination
// through the admin API and times until the receiver holds every event.
func runCatchup(ctx context.Context, e *env) (*catchupResult, error) {
	p := e.p
	res := &catchupResult{Rooms: p.cuRooms, MaxPending: p.cuPending}
	cfg, err := e.config("catchup", func(c *config.Config) { c.Queue.MaxPending = p.cuPending })
	if err != nil {
		return nil, err
	}
	var (
		mu     sync.Mutex
		seen   = make([]bool, p.cuRooms)
		have   int
		doneAt time.Time
		all    = make(chan struct{})
	)
	r, err := receiver.New(receiver.Options{
		Origin:             origin,
		OriginKey:          e.key.Public(),
		OriginKeyID:        e.key.KeyID(),
		Cert:               e.cert,
		SkipSignatureCheck: !p.verifySigs,
		OnPDU: func(eventID, _ string, _ time.Time) {
			n := eventNumber(eventID, "cu")
			if n < 0 || n >= len(seen) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !seen[n] {
				seen[n] = true
				have++
				if have == len(seen) {
					doneAt = time.Now()
					close(all)
				}
			}
		},
	})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	r.Stop()
	dest := r.ServerName()

	in, err := e.startService(cfg)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			in.stop()
		}
	}()
	factory := newPDUFactory([]string{dest}, p.pduSize)
	acks := newAckChecker()
	for i := range p.cuRooms {
		fut, err := in.pub.PublishAsync(factory.envelope("cu", i, fmt.Sprintf("!cu%05d:origin.test", i)))
		if err != nil {
			acks.finish()
			return nil, fmt.Errorf("publish: %w", err)
		}
		acks.futures <- fut
		if i%1000 == 999 {
			// Stay well within the client's limit of pending publishes.
			select {
			case <-in.js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				return nil, fmt.Errorf("publish acknowledgements missing after 30s")
			}
		}
	}
	if err := acks.finish(); err != nil {
		return nil, err
	}
	e.progress("catchup: %d PDUs in %d rooms published to %s while it is down", p.cuRooms, p.cuRooms, dest)

	// Wait until the destination is failing and catching up, in its log and
	// in the admin API's read model (the reset needs it failing).
	part := streams.Partition(dest, cfg.Queue.Partitions)
	events, err := in.js.Stream(ctx, streams.EventStream)
	if err != nil {
		return nil, err
	}
	var last destination.State
	ok := waitFor(ctx, 60*time.Second, func() bool {
		msg, err := events.GetLastMsgForSubject(ctx, streams.EventSubject(part, dest))
		if err != nil {
			return false
		}
		var ev destination.Event
		if json.Unmarshal(msg.Data, &ev) != nil {
			return false
		}
		last = ev.State
		if !last.CatchingUp || !last.Failing() {
			return false
		}
		code, body := adminCall(http.MethodGet, in.svc.AdminAddr, "/_synapse/admin/v1/federation/destinations/"+dest)
		var info struct {
			RetryLastTS int64 `json:"retry_last_ts"`
		}
		return code == http.StatusOK && json.Unmarshal(body, &info) == nil && info.RetryLastTS != 0
	})
	if !ok {
		return nil, fmt.Errorf("%s did not show as failing and catching up within 60s (last logged state %+v; its log: %s)",
			dest, last, eventHistory(ctx, in, part, dest))
	}
	// Let the reader finish dispatching (the actor ignores it while
	// catching up).
	time.Sleep(500 * time.Millisecond)
	if r.PDUCount() != 0 {
		return nil, fmt.Errorf("the stopped receiver holds %d PDUs", r.PDUCount())
	}

	t0 := time.Now()
	if err := r.Restart(); err != nil {
		return nil, err
	}
	code, body := adminCall(http.MethodPost, in.svc.AdminAddr, "/_synapse/admin/v1/federation/destinations/"+dest+"/reset_connection")
	if code != http.StatusOK {
		return nil, fmt.Errorf("reset_connection answered %d %s", code, body)
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		mu.Lock()
		n := have
		mu.Unlock()
		return nil, fmt.Errorf("after restart and reset, %s holds %d of %d events after 60s (%d requests, %d transactions)",
			dest, n, p.cuRooms, r.Requests(), len(r.Transactions()))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	res.Seconds = doneAt.Sub(t0).Seconds()
	mu.Unlock()
	res.Transactions = len(r.Transactions())
	res.Requests = r.Requests()
	res.Checks = (&fleet{rs: []*receiver.Receiver{r}}).checks()
	stopped = true
	if err := in.stop(); err != nil {
		return res, err
	}
	return res, nil
}

// eventHistory lists a destination's logged events, for error messages.
func eventHistory(ctx context.Context, in *instance, part int, dest string) string {
	cons, err := in.js.OrderedConsumer(ctx, streams.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{streams.EventSubject(part, dest)},
	})
	if err != nil {
		return err.Error()
	}
	batch, err := cons.Fetch(streams.EventHistory, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return err.Error()
	}
	var out []string
	for msg := range batch.Messages() {
		var ev destination.Event
		if json.Unmarshal(msg.Data(), &ev) != nil {
			out = append(out, "?")
			continue
		}
		s := string(ev.Type)
		if ev.Reason != "" {
			s += " (" + ev.Reason + ")"
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return "no events"
	}
	return strings.Join(out, ", ")
}
