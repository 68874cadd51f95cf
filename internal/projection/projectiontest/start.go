package projectiontest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Start runs each function until stop is called or t ends, and fails t if
// one returns an error or does not return within 10 s of its context
// ending.
func Start(t testing.TB, runs ...func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, len(runs))
	for _, run := range runs {
		go func() { errc <- run(ctx) }()
	}
	stop = sync.OnceFunc(func() {
		cancel()
		deadline := time.After(10 * time.Second)
		for range runs {
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-deadline:
				t.Error("Run did not return within 10s of its context ending")
				return
			}
		}
	})
	t.Cleanup(stop)
	return stop
}
