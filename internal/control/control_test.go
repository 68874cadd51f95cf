package control_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/control"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

type resets struct {
	mu   sync.Mutex
	got  []string
	fail error
}

// reset answers the sequence 100 plus the number of resets so far, and
// refuses "healthy.example" as not failing.
func (r *resets) reset(_ context.Context, dest string) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dest == "healthy.example" {
		return 0, destination.ErrNotFailing
	}
	r.got = append(r.got, dest)
	return 100 + uint64(len(r.got)), r.fail
}

func (r *resets) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func TestReset(t *testing.T) {
	nc, _, _ := projectiontest.JetStream(t)
	const n = 8
	r := &resets{}
	// This replica owns every partition but the one of "orphan.example".
	orphan := streams.Partition("orphan.example", n)
	var owned []int
	for p := range n {
		if p != orphan {
			owned = append(owned, p)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- control.Serve(ctx, control.ServerOptions{NC: nc, Owned: owned, Partitions: n, Reset: r.reset})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := control.NewClient(nc, n)
	call := func(dest string) error {
		_, err := c.Reset(t.Context(), dest)
		return err
	}
	bounded := func(dest string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Reset(ctx, dest)
		return err
	}
	// The subscriptions are in place once a command is answered.
	projectiontest.Eventually(t, 5*time.Second, func() bool { return bounded("matrix.org") == nil }, "no owner answered")
	// The owner's answer is the event-log sequence of the reset.
	if seq, err := c.Reset(t.Context(), "[::1]:8448"); err != nil || seq != 100+uint64(len(r.list())) {
		t.Errorf("reset [::1]:8448 = %d, %v; want sequence %d", seq, err, 100+len(r.list()))
	}
	if err := call("healthy.example"); !errors.Is(err, destination.ErrNotFailing) {
		t.Errorf("reset of a destination that is not failing = %v, want destination.ErrNotFailing", err)
	}
	if err := bounded("orphan.example"); !errors.Is(err, control.ErrNoOwner) {
		t.Errorf("reset of an unowned partition = %v, want ErrNoOwner", err)
	}
	for _, bad := range []string{"*", ">", "a b", "matrix.org.>", "", string(make([]byte, 300))} {
		if err := call(bad); err == nil {
			t.Errorf("reset %q accepted", bad)
		}
	}
	r.mu.Lock()
	r.fail = errors.New("supervisor gone")
	r.mu.Unlock()
	if err := call("example.com"); !errors.Is(err, control.ErrRefused) {
		t.Errorf("a failing owner = %v, want ErrRefused", err)
	}
	// A command sent straight to a partition's subject for a destination
	// of another partition is refused.
	other := (streams.Partition("matrix.org", n) + 1) % n
	msg, err := nc.Request(streams.ControlResetSubject(other), []byte(`{"destination":"matrix.org"}`), 5*time.Second)
	if err != nil || string(msg.Data) == "{}" {
		t.Errorf("misrouted command answered %q, %v; want a refusal", msg.Data, err)
	}
	msg, err = nc.Request(streams.ControlResetSubject(other), []byte(`not json`), 5*time.Second)
	if err != nil || string(msg.Data) == "{}" {
		t.Errorf("malformed command answered %q, %v; want a refusal", msg.Data, err)
	}
	got := r.list()
	if len(got) == 0 || !slices.Contains(got, "[::1]:8448") || slices.ContainsFunc(got, func(d string) bool { return d != "matrix.org" && d != "[::1]:8448" && d != "example.com" }) {
		t.Errorf("resets performed = %v", got)
	}
}

func TestServerUpReachesTheOwnerOfTheDestinationOnly(t *testing.T) {
	nc, _, _ := projectiontest.JetStream(t)
	const n = 8
	orphan := streams.Partition("orphan.example", n)
	var owned []int
	for p := range n {
		if p != orphan {
			owned = append(owned, p)
		}
	}
	ups := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- control.Serve(ctx, control.ServerOptions{NC: nc, Owned: owned, Partitions: n,
			Reset: (&resets{}).reset, ServerUp: func(d string) { ups <- d }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Subscribed once a reset command is answered.
	c := control.NewClient(nc, n)
	projectiontest.Eventually(t, 5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Reset(ctx, "matrix.org")
		return err == nil || errors.Is(err, control.ErrRefused)
	}, "no owner answered")
	for _, body := range []string{`not json`, `{"destination":"a b"}`, `{"destination":"orphan.example"}`, `{}`, `{"destination":"Matrix.ORG"}`} {
		if err := nc.Publish(streams.ServerUpSubject, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case d := <-ups:
		if d != "matrix.org" {
			t.Errorf("server_up passed on for %q; want only matrix.org (normalised), the others invalid or not owned", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server_up for an owned destination not passed on")
	}
	select {
	case d := <-ups:
		t.Errorf("server_up also passed on for %q", d)
	default:
	}
}

// TestResetFollowsAMovingPartition: a command that reached a replica just
// before it gave the partition up is not done there; the sender asks again
// and the partition's new owner does it.
func TestResetFollowsAMovingPartition(t *testing.T) {
	nc, _, _ := projectiontest.JetStream(t)
	const n = 4
	dest := "moving.example"
	p := streams.Partition(dest, n)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	old := control.NewServer(control.ServerOptions{NC: nc, Partitions: n,
		Reset: func(context.Context, string) (uint64, error) {
			t.Error("the replica that gave the partition up did the reset")
			return 1, nil
		}})
	if err := old.Own(ctx, p); err != nil {
		t.Fatal(err)
	}
	arrived := make(chan struct{}, 1)
	watch, err := nc.Subscribe(streams.ControlResetSubject(p), func(*nats.Msg) { arrived <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		seq uint64
		err error
	}
	res := make(chan result, 1)
	go func() {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		seq, err := control.NewClient(nc, n).Reset(rctx, dest)
		res <- result{seq, err}
	}()
	select {
	case <-arrived: // the old owner has the command too, not served yet
	case <-time.After(5 * time.Second):
		t.Fatal("the command did not arrive")
	}
	watch.Unsubscribe()
	// The partition moves: the old owner lets go, the new owner takes it,
	// and only then does the old one serve what it had taken.
	old.Disown(p)
	next := control.NewServer(control.ServerOptions{NC: nc, Partitions: n,
		Reset: func(context.Context, string) (uint64, error) { return 42, nil }})
	go next.Run(ctx)
	if err := next.Own(ctx, p); err != nil {
		t.Fatal(err)
	}
	go old.Run(ctx)
	r := <-res
	if r.err != nil || r.seq != 42 {
		t.Fatalf("Reset = %d, %v; want 42 from the new owner", r.seq, r.err)
	}
}
