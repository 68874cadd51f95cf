package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/control"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/kvprojection"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// partitions is the partition count of the deployments these tests play.
const partitions = 8

// ownerLog plays the owner of every destination: it appends their events to
// the event log, and performs the reset commands it is sent over NATS.
type ownerLog struct {
	store  *eventlog.Store
	mu     sync.Mutex
	states map[string]destination.State
	seqs   map[string]uint64
}

// record appends an event of dest and returns its sequence.
func (o *ownerLog) record(ctx context.Context, dest string, ev destination.Event) (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.states[dest]
	s.Destination = dest
	ev.At = time.Now().UnixMilli()
	seq, err := o.store.Append(ctx, streams.Partition(dest, partitions), s.Record(ev), o.seqs[dest])
	if err != nil {
		return 0, err
	}
	o.states[dest], o.seqs[dest] = s, seq
	return seq, nil
}

func (o *ownerLog) failing(dest string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.states[dest].Failing()
}

// reset is the owner's side of a reset command: the sequence of the
// stored Reset event.
func (o *ownerLog) reset(ctx context.Context, dest string) (uint64, error) {
	if !o.failing(dest) {
		return 0, destination.ErrNotFailing
	}
	return o.record(ctx, dest, destination.Event{Type: destination.Reset})
}

// replica is one fedsender replica's HTTP admin API, over its own read
// model and its own NATS connection (see newReplica).
type replica struct {
	http http.Handler
}

func (r replica) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return r.do(t, http.MethodGet, path)
}

func (r replica) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	r.http.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

// projected is a deployment whose read model is projected from the real
// event log: a way to start one replica's read model on a connection.
type projected func(t *testing.T, nc *nats.Conn) admin.Reader

// projectedKV: each replica runs its own Projector into the shared bucket
// and its own Index of it, as the service does.
func projectedKV(t *testing.T, nc *nats.Conn) admin.Reader {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	idx := kvprojection.NewIndex(js, nil)
	proj := kvprojection.NewProjector(kvprojection.ProjectorOptions{JS: js, Index: idx})
	projectiontest.Start(t, idx.Run, proj.Run)
	return idx
}

// projectedPostgres returns a maker of replicas that share one database:
// each runs its own projector (on the shared durable consumer) and reads
// the shared tables.
func projectedPostgres(t *testing.T) projected {
	pool := migratedPool(t)
	return func(t *testing.T, nc *nats.Conn) admin.Reader {
		t.Helper()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		proj := pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool})
		rd := pgprojection.NewReader(pool, proj, nil)
		projectiontest.Start(t, proj.Run, rd.Run)
		return rd
	}
}

// TestResetIsReadByTheNextRead: after reset_connection answers 200, every
// read that starts afterwards shows the timings cleared (retry_last_ts 0,
// retry_interval 0, failure_ts null, as Synapse shows them after a reset),
// on whichever replica and surface answers it, with either read model.
// Replica b's NATS connection holds back everything the server sends for
// 300 ms, so its view of the shared bucket lags replica a's.
func TestResetIsReadByTheNextRead(t *testing.T) {
	for _, m := range []struct {
		name string
		open func(t *testing.T) projected
	}{
		{"kv", func(*testing.T) projected { return projectedKV }},
		{"postgres", projectedPostgres},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testResetIsReadByTheNextRead(t, m.open(t))
		})
	}
}

func testResetIsReadByTheNextRead(t *testing.T, open projected) {
	nc, js, url := projectiontest.JetStream(t)
	store, err := eventlog.Open(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	o := &ownerLog{store: store, states: map[string]destination.State{}, seqs: map[string]uint64{}}
	const dest = "failing.example:8448"
	fail := func() {
		t.Helper()
		if _, err := o.record(t.Context(), dest, destination.Event{Type: destination.Failed, Interval: 600_000, Offset: 7}); err != nil {
			t.Fatal(err)
		}
	}
	fail()
	if _, err := o.record(t.Context(), "idle.example", destination.Event{Type: destination.Recovered, Offset: 3}); err != nil {
		t.Fatal(err)
	}
	projectiontest.Start(t, func(ctx context.Context) error {
		return control.Serve(ctx, control.ServerOptions{NC: nc, Owned: allPartitions(), Partitions: partitions, Reset: o.reset})
	})

	link, _ := slowLink(t, url, 300*time.Millisecond)
	slow, err := nats.Connect(link)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(slow.Close)
	a := newReplica(t, nc, open(t, nc), false)
	b := newReplica(t, slow, open(t, slow), true)

	path := base + "/failing.example%3A8448"
	showsFailing := func(r replica) bool {
		_, body := r.get(t, path)
		var d map[string]any
		return json.Unmarshal([]byte(body), &d) == nil && d["retry_last_ts"] != float64(0) && d["retry_last_ts"] != nil
	}
	projectiontest.Eventually(t, 20*time.Second, func() bool { return showsFailing(a) && showsFailing(b) }, "the replicas never showed %s failing", dest)

	const cleared = `{"destination":"failing.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":7}`
	reads := func(after string) {
		t.Helper()
		for name, r := range map[string]replica{"a": a, "b": b} {
			if _, body := r.get(t, path); body != cleared {
				t.Errorf("after %s, details on replica %s = %s, want %s", after, name, body, cleared)
			}
			if _, body := r.get(t, base+"?destination=failing"); body != `{"destinations":[`+cleared+`],"total":1}` {
				t.Errorf("after %s, list on replica %s = %s", after, name, body)
			}
		}
		req, _ := json.Marshal(map[string]string{"destination": dest})
		msg, err := nc.Request(streams.AdminSubject("show"), req, 10*time.Second)
		if err != nil || string(msg.Data) != cleared {
			t.Errorf("after %s, micro show = %v %s, want %s", after, err, msgBody(msg), cleared)
		}
	}

	// Through replica a's HTTP API.
	if status, body := a.do(t, http.MethodPost, path+"/reset_connection"); status != 200 || body != "{}" {
		t.Fatalf("reset on replica a = %d %s, want 200 {}", status, body)
	}
	reads("a reset over HTTP on replica a")

	// Through the micro service (replica b serves it).
	fail()
	projectiontest.Eventually(t, 20*time.Second, func() bool { return showsFailing(a) && showsFailing(b) }, "the replicas never showed %s failing again", dest)
	req, _ := json.Marshal(map[string]string{"destination": dest})
	msg, err := nc.Request(streams.AdminSubject("reset"), req, 20*time.Second)
	if err != nil || string(msg.Data) != "{}" {
		t.Fatalf("micro reset = %v %s, want {}", err, msgBody(msg))
	}
	reads("a reset over the micro service")

	// A destination that is not backing off: Synapse's 400, on both.
	const notNeeded = `{"errcode":"M_UNKNOWN","error":"The retry timing does not need to be reset for this destination."}`
	for name, r := range map[string]replica{"a": a, "b": b} {
		if status, body := r.do(t, http.MethodPost, base+"/idle.example/reset_connection"); status != 400 || body != notNeeded {
			t.Errorf("reset of a healthy destination on replica %s = %d %s, want 400 %s", name, status, body, notNeeded)
		}
	}
	msg, err = nc.Request(streams.AdminSubject("reset"), []byte(`{"destination":"idle.example"}`), 20*time.Second)
	if err != nil || string(msg.Data) != notNeeded {
		t.Errorf("micro reset of a healthy destination = %v %s, want %s", err, msgBody(msg), notNeeded)
	}
}

// newReplica serves the admin surfaces of a replica on nc: HTTP, and with
// micro the micro service.
func newReplica(t *testing.T, nc *nats.Conn, rd admin.Reader, micro bool) replica {
	t.Helper()
	opts := admin.Options{Tokens: []string{token}, Reader: rd, Resetter: control.NewClient(nc, partitions)}
	if micro {
		projectiontest.Start(t, func(ctx context.Context) error { return admin.ServeMicro(ctx, nc, opts) })
	}
	return replica{http: admin.New(opts)}
}

func allPartitions() []int {
	out := make([]int, partitions)
	for p := range out {
		out[p] = p
	}
	return out
}

func msgBody(m *nats.Msg) string {
	if m == nil {
		return "(no reply)"
	}
	return string(m.Data)
}

// slowLink forwards connections to the NATS server at url, holding back
// every byte the server sends by delay (what the client sends goes at
// once). It returns the URL to connect to, and cut, which closes the link
// and every connection through it, as a network failure would.
func slowLink(t *testing.T, url string, delay time.Duration) (link string, cut func()) {
	t.Helper()
	target := url[len("nats://"):]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	cut = sync.OnceFunc(func() {
		ln.Close()
		close(done)
	})
	t.Cleanup(func() {
		cut()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() {
				<-done
				c.Close()
				s.Close()
			})
			wg.Go(func() { io.Copy(s, c) })
			wg.Go(func() { delayed(c, s, delay) })
		}
	})
	return "nats://" + ln.Addr().String(), cut
}

// delayed copies from src to dst, each chunk delay after it was read, in
// order.
func delayed(dst io.Writer, src io.Reader, delay time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now().Add(delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// TestReadWithoutNATSAnswers503: a replica whose NATS connection is down
// cannot tell whether its index shows the newest state: its reads answer
// 503 at once, saying so, rather than what may be old.
func TestReadWithoutNATSAnswers503(t *testing.T) {
	_, _, url := projectiontest.JetStream(t)
	link, cut := slowLink(t, url, 0)
	nc, err := nats.Connect(link, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := newEnv(t, func(o *admin.Options) { o.Reader = projectedKV(t, nc) })
	projectiontest.Eventually(t, 20*time.Second, func() bool { return r.do(t, "GET", base).status == 200 }, "the read model never answered")
	cut()
	projectiontest.Eventually(t, 5*time.Second, func() bool { return !nc.IsConnected() }, "the connection never noticed the cut")
	start := time.Now()
	r.do(t, "GET", base+"/a.example").wantError(t, 503, "M_UNKNOWN",
		"The read model could not confirm that it shows the newest state (NATS unreachable, or the read model more than 5s behind); try again")
	if took := time.Since(start); took > time.Second {
		t.Errorf("the 503 took %v; want it at once", took)
	}
}
