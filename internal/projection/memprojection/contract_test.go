package memprojection_test

import (
	"context"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection/memprojection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// TestContract: the in-memory projection answers every page as the
// reference does.
func TestContract(t *testing.T) {
	projectiontest.Run(t, func(t *testing.T, states []destination.State) projectiontest.Reader {
		_, js, _ := projectiontest.JetStream(t)
		store, err := eventlog.Open(context.Background(), js)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			ev := destination.Event{Type: destination.Failed, At: 1, State: s}
			if _, err := store.Append(context.Background(), streams.Partition(s.Destination, 8), ev, 0); err != nil {
				t.Fatalf("append: %v", err)
			}
		}
		p := memprojection.New(js)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		projectiontest.Eventually(t, 10*time.Second, func() bool { return p.Ready() && len(p.List()) == len(states) },
			"projection has %d of %d destinations", len(p.List()), len(states))
		return p
	})
}
