package partition_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anthdm/hollywood/actor"
	"golang.org/x/time/rate"

	"github.com/fedsender/fedsender/actors/destination"
	"github.com/fedsender/fedsender/actors/partition"
	"github.com/fedsender/fedsender/internal/backoff"
	"github.com/fedsender/fedsender/internal/catchup"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/ingest"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/queuebudget"
	"github.com/fedsender/fedsender/streams"
)

// gatedSender records the to-device message ids of each transaction and
// holds every send until opened: the HTTP path is not what this test
// exercises (the end-to-end tests do).
type gatedSender struct {
	mu    sync.Mutex
	sends [][]string
	open  chan struct{}
}

func (g *gatedSender) SendTransaction(ctx context.Context, _, _ string, body, _ []byte) (federation.TransactionResult, error) {
	var b struct {
		EDUs []struct {
			Content struct {
				MessageID string `json:"message_id"`
			} `json:"content"`
		} `json:"edus"`
	}
	json.Unmarshal(body, &b)
	var ids []string
	for _, e := range b.EDUs {
		ids = append(ids, e.Content.MessageID)
	}
	g.mu.Lock()
	g.sends = append(g.sends, ids)
	g.mu.Unlock()
	select {
	case <-g.open:
		return federation.TransactionResult{}, nil
	case <-ctx.Done():
		return federation.TransactionResult{}, ctx.Err()
	}
}

func (g *gatedSender) calls() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sends)
}

func TestAFailedActorsMustDeliverEDUsAreReadAgain(t *testing.T) {
	_, js, _ := projectiontest.JetStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := streams.Ensure(ctx, js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	store, err := eventlog.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sender := &gatedSender{open: make(chan struct{})}
	scanner := catchup.New(js)
	cfg := &partition.Config{
		Destination: &destination.Config{Origin: "origin.test", Epoch: "e", Sender: sender, Scanner: scanner, EDUScanner: scanner,
			Policy:     backoff.Policy{Min: time.Minute, Max: time.Hour, Multiplier: 2, CatchUpAfter: time.Hour},
			MaxPending: 1000, Budget: queuebudget.New(1 << 20), Now: time.Now, Log: log, Chains: store},
		Store: store, WakeLimiter: rate.NewLimiter(1000, 1), IdleTimeout: time.Hour, Checkpoint: 100 * time.Millisecond,
		Owner: "test", Log: log, Context: ctx,
	}
	engine, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		t.Fatal(err)
	}
	pid := engine.Spawn(partition.New(cfg, 0, nil, eventlog.Watermark{}, 0, nil), "partition")
	reader := ingest.NewEDUReader(ingest.EDUOptions{JS: js, Engine: engine, Partitions: []*actor.PID{pid}, Start: 1, Origin: "origin.test", Log: log})
	go reader.Run(ctx)

	pub := streams.NewPublisher(js)
	publish := func(i int) {
		env := fmt.Sprintf(`{"edu_type":"m.direct_to_device","content":{"message_id":"k%d","messages":{},"sender":"@a:origin.test","type":"x"},"destinations":["dest.test"]}`, i)
		if _, _, err := pub.Publish(ctx, []byte(env)); err != nil {
			t.Fatal(err)
		}
	}
	publish(1)
	projectiontest.Eventually(t, 10*time.Second, func() bool { return len(sender.calls()) == 1 }, "the first transaction was not sent")
	for i := 2; i <= 5; i++ {
		publish(i)
	}
	projectiontest.Eventually(t, 10*time.Second, func() bool { return reader.Through() == 5 }, "the reader did not hand over the EDUs")
	// The supervisor handed the four EDUs to the actor before this one,
	// which makes it panic: they were only in its memory.
	engine.Send(pid, partition.DispatchEDU{Pairs: []partition.EDUPair{{Destination: "dest.test", Item: streams.EDUItem{Seq: 6}}}, Through: 6})
	// Its replacement sends what it held (k1 was not acknowledged) while
	// the first transaction still hangs.
	projectiontest.Eventually(t, 10*time.Second, func() bool { return len(sender.calls()) == 2 }, "the failed actor's replacement sent nothing: %v", sender.calls())
	close(sender.open)
	if got := sender.calls()[1]; !slices.Equal(got, []string{"k1", "k2", "k3", "k4", "k5"}) {
		t.Errorf("the replacement sent %v; want k1 to k5, in order", got)
	}
}
