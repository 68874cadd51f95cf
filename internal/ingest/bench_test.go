package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/ingest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/queuebudget"
	"github.com/fedsender/fedsender/streams"
)

// BenchmarkReadOthersPDUs measures what a replica spends on the PDUs of
// partitions other replicas own: every replica reads the whole PDU stream
// once (ordered consumer, decode, validation) and dispatches only its own
// partitions' share. Here it owns none, so the time per PDU is the whole
// overhead of a PDU another replica delivers. Reported per PDU with 10
// destinations and a 1 KiB event.
func BenchmarkReadOthersPDUs(b *testing.B) {
	_, js, _ := projectiontest.JetStream(b)
	pub := streams.NewPublisher(js)
	dests := make([]string, 10)
	for i := range dests {
		dests[i] = fmt.Sprintf("server%d.example", i)
	}
	body := make([]byte, 900)
	for i := range body {
		body[i] = 'a'
	}
	var futures []jetstream.PubAckFuture
	for n := range b.N {
		env, err := json.Marshal(streams.Envelope{RoomID: "!r:origin.test", EventID: fmt.Sprintf("$e%d", n),
			PDU:          json.RawMessage(fmt.Sprintf(`{"type":"m.room.message","content":{"body":%q},"depth":%d}`, body, n)),
			Destinations: dests})
		if err != nil {
			b.Fatal(err)
		}
		f, err := pub.PublishAsync(env)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	engine, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		b.Fatal(err)
	}
	r := ingest.New(ingest.Options{JS: js, Engine: engine, Partitions: make([]*actor.PID, 64),
		Budget: queuebudget.New(1 << 20), Start: 1, Origin: "origin.test", Log: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	go r.Run(ctx)
	deadline := time.Now().Add(5 * time.Minute)
	for r.Through() < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("read %d of %d PDUs in 5 minutes", r.Through(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	// The process's CPU time: the reader's, and the in-process NATS
	// server's share of serving it.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/pdu")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
