package queuebudget

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAcquireWaitsForRelease(t *testing.T) {
	b := New(10)
	ctx := context.Background()
	if err := b.Acquire(ctx, 8); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Acquire(ctx, 5) }()
	select {
	case err := <-got:
		t.Fatalf("acquired 5 with 8 of 10 taken: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(3)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after a release made room")
	}
	if q := b.Queued(); q != 10 {
		t.Fatalf("queued = %d, want 10", q)
	}
}

func TestOversizedBatchPassesWhenEmpty(t *testing.T) {
	b := New(10)
	if err := b.Acquire(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
	if q := b.Queued(); q != 50 {
		t.Fatalf("queued = %d, want 50", q)
	}
}

func TestAcquireEndsWithContext(t *testing.T) {
	b := New(1)
	if err := b.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Acquire(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire on a full budget = %v, want DeadlineExceeded", err)
	}
}
