package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/kvprojection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// owner plays the destinations' owner: it writes their events, and performs
// the resets the admin API hands to it.
type owner struct {
	store  *eventlog.Store
	mu     sync.Mutex
	states map[string]*destination.State
	seqs   map[string]uint64
}

func (o *owner) record(ctx context.Context, dest string, ev destination.Event) error {
	_, err := o.append(ctx, dest, ev)
	return err
}

func (o *owner) append(ctx context.Context, dest string, ev destination.Event) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.states[dest]
	if !ok {
		s = &destination.State{Destination: dest}
		o.states[dest] = s
	}
	seq, err := o.store.Append(ctx, streams.Partition(dest, 8), s.Record(ev), o.seqs[dest])
	if err != nil {
		return 0, err
	}
	o.seqs[dest] = seq
	return seq, nil
}

func (o *owner) Reset(ctx context.Context, dest string) (uint64, error) {
	return o.append(ctx, dest, destination.Event{Type: destination.Reset, At: time.Now().UnixMilli()})
}

func TestWithKVProjection(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := eventlog.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{store: store, states: map[string]*destination.State{}, seqs: map[string]uint64{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(o.record(ctx, "failing.example:8448", destination.Event{Type: destination.Failed, At: 1000, Interval: 600_000, Offset: 7}))
	must(o.record(ctx, "ok.example", destination.Event{Type: destination.Failed, At: 2000, Interval: 600_000}))
	must(o.record(ctx, "ok.example", destination.Event{Type: destination.Recovered, At: 2600, Offset: 5}))
	_, err = store.PutOffset(ctx, streams.Partition("ok.example", 8), "ok.example", 42, 0)
	must(err)
	_, err = store.PutOffset(ctx, streams.Partition("[2001:db8::1]", 8), "[2001:db8::1]", 3, 0)
	must(err)

	proj := kvprojection.NewIndex(js, nil)
	projector := kvprojection.NewProjector(kvprojection.ProjectorOptions{JS: js, Index: proj})
	srv := httptest.NewServer(admin.New(admin.Options{
		Tokens: []string{token}, Reader: proj, Resetter: o,
		Ready: func() error {
			if !proj.Ready() {
				return admin.ErrNotReady
			}
			return nil
		},
	}))
	t.Cleanup(srv.Close)
	call := func(method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, nil)
		must(err)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := srv.Client().Do(req)
		must(err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		must(err)
		return res.StatusCode, string(body)
	}

	// Not running yet: not ready.
	if status, body := call("GET", base); status != 503 {
		t.Errorf("list before the projection runs = %d %s, want 503", status, body)
	}
	if status, _ := call("GET", "/readyz"); status != 503 {
		t.Errorf("/readyz before the projection runs = %d, want 503", status)
	}

	projectiontest.Start(t, proj.Run, projector.Run)
	poll(t, "/readyz to answer 200", func() bool { s, _ := call("GET", "/readyz"); return s == 200 })

	want := `{"destinations":[` +
		`{"destination":"ok.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":42},` +
		`{"destination":"failing.example:8448","retry_last_ts":1000,"retry_interval":600000,"failure_ts":1000,"last_successful_stream_ordering":7},` +
		`{"destination":"[2001:db8::1]","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":3}` +
		`],"total":3}`
	// The projector writes the bucket within about 250 ms of the events.
	poll(t, "the list to show the three destinations", func() bool {
		status, body := call("GET", base+"?order_by=last_successful_stream_ordering&dir=b")
		return status == 200 && body == want
	})

	// A reset goes to the owner, whose Reset event reaches the read model.
	if status, body := call("POST", base+"/failing.example%3A8448/reset_connection"); status != 200 || body != "{}" {
		t.Fatalf("reset = %d %s, want 200 {}", status, body)
	}
	wantReset := `{"destination":"failing.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":7}`
	poll(t, "the reset to show", func() bool {
		_, body := call("GET", base+"/failing.example:8448")
		return body == wantReset
	})
	status, body := call("POST", base+"/failing.example:8448/reset_connection")
	if status != 400 || !strings.Contains(body, "The retry timing does not need to be reset for this destination.") {
		t.Errorf("second reset = %d %s, want 400", status, body)
	}

	// New destinations appear as the owner writes them.
	must(o.record(ctx, "new.example", destination.Event{Type: destination.Failed, At: 5000, Interval: 600_000}))
	poll(t, "a new destination to show", func() bool {
		status, body := call("GET", base+"/%5B2001%3Adb8%3A%3A1%5D")
		if status != 200 {
			t.Fatalf("details of [2001:db8::1] = %d %s", status, body)
		}
		_, body = call("GET", base+"?destination=NEW")
		var l struct{ Total int }
		return json.Unmarshal([]byte(body), &l) == nil && l.Total == 1
	})
	if status, body := call("GET", base+"/new.example/rooms"); status != 200 || body != `{"rooms":[],"total":0}` {
		t.Errorf("rooms = %d %s", status, body)
	}
}

// poll checks cond every few milliseconds until it holds, and fails the test
// if it does not within 10 seconds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after 10s waiting for %s", what)
		case <-tick.C:
		}
	}
}
