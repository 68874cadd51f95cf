package lease_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
)

var short = lease.Options{TTL: 2 * time.Second}

func TestOneHolderAtATime(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	ctx := t.Context()
	a, err := lease.TryAcquire(ctx, js, "feed", "replica-a", short)
	if err != nil {
		t.Fatalf("first acquire: %v", err)
	}
	if !a.Valid() {
		t.Fatal("a fresh lease is not valid")
	}
	_, err = lease.TryAcquire(ctx, js, "feed", "replica-b", short)
	if !errors.Is(err, lease.ErrHeld) || !strings.Contains(err.Error(), "replica-a") {
		t.Fatalf("second acquire: got %v, want ErrHeld naming replica-a", err)
	}
	// Renewals keep it: after three TTLs it is still a's.
	deadline := time.Now().Add(3 * short.TTL)
	for time.Now().Before(deadline) {
		if _, err := lease.TryAcquire(ctx, js, "feed", "replica-b", short); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("b took a renewed lease: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !a.Valid() {
		t.Fatal("a renewed lease stopped being valid")
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if a.Valid() {
		t.Fatal("a released lease is still valid")
	}
	b, err := lease.TryAcquire(ctx, js, "feed", "replica-b", short)
	if err != nil {
		t.Fatalf("acquire right after release: %v", err)
	}
	r, ok, err := lease.Holder(ctx, mustKV(t, js), "feed")
	if err != nil || !ok || r.Holder != "replica-b" {
		t.Fatalf("holder: %+v %v %v, want replica-b", r, ok, err)
	}
	_ = b.Release(ctx)
}

func TestAnAbandonedLeaseExpiresAndIsTaken(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	actx, stop := context.WithCancel(t.Context())
	a, err := lease.TryAcquire(actx, js, "p.3", "replica-a", short)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	stop() // a stops renewing without releasing: a crash, as far as NATS knows
	if a.Valid() {
		t.Fatal("a lease whose holder stopped is still valid")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := lease.Acquire(ctx, js, "p.3", "replica-b", short)
	if err != nil {
		t.Fatalf("acquire after expiry: %v", err)
	}
	defer b.Release(t.Context())
	if took := time.Since(start); took < short.TTL-short.TTL/6-100*time.Millisecond {
		t.Fatalf("b took the lease after %v, before a's TTL of %v could pass", took, short.TTL)
	}
}

func TestLosingTheKeyEndsTheLease(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	ctx := t.Context()
	a, err := lease.TryAcquire(ctx, js, "p.7", "replica-a", short)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	// The key vanishes (an operator's `nats kv del`) and b takes it: a's
	// next renewal finds another revision and a stops acting.
	if err := mustKV(t, js).Delete(ctx, "p.7"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	b, err := lease.TryAcquire(ctx, js, "p.7", "replica-b", short)
	if err != nil {
		t.Fatalf("b acquire: %v", err)
	}
	defer b.Release(ctx)
	select {
	case <-a.Context().Done():
	case <-time.After(3 * short.TTL):
		t.Fatal("a did not notice it lost the lease")
	}
	if !errors.Is(context.Cause(a.Context()), lease.ErrLost) || a.Valid() {
		t.Fatalf("a: cause %v, valid %v; want ErrLost and not valid", context.Cause(a.Context()), a.Valid())
	}
	if !b.Valid() {
		t.Fatal("b's lease is not valid")
	}
}

func mustKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), lease.Bucket)
	if err != nil {
		t.Fatalf("bucket: %v", err)
	}
	return kv
}

// TestAHolderCutOffStopsBeforeTheKeyExpires: a holder that cannot reach
// NATS has its lease end at its deadline, before the key expires on the
// server and another holder can take it.
func TestAHolderCutOffStopsBeforeTheKeyExpires(t *testing.T) {
	_, js, url := projectiontest.JetStream(t)
	nc, err := nats.Connect(url, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	ajs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lease.TryAcquire(t.Context(), ajs, "partition.2", "replica-a", short)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	nc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b, err := lease.Acquire(ctx, js, "partition.2", "replica-b", short)
	if err != nil {
		t.Fatalf("b acquire: %v", err)
	}
	defer b.Release(t.Context())
	// Checked right after b got it: a's lease had ended already.
	if !errors.Is(context.Cause(a.Context()), lease.ErrLost) || a.Valid() {
		t.Fatalf("b took the lease while a's had not ended: cause %v, valid %v", context.Cause(a.Context()), a.Valid())
	}
}
