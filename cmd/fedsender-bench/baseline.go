package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/transaction"
	"github.com/fedsender/fedsender/streams"
)

// natsServer is an embedded NATS server of the bench's own, configured as
// fedsender configures its embedded one, with a TCP client connection.
type natsServer struct {
	ns *server.Server
	nc *nats.Conn
	js jetstream.JetStream
}

func startNATS(storeDir string) (*natsServer, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName:         "fedsender",
		JetStream:          true,
		StoreDir:           storeDir,
		JetStreamMaxStore:  4 << 30,
		JetStreamMaxMemory: 64 << 20,
		NoSigs:             true,
		Host:               "127.0.0.1",
		Port:               server.RANDOM_PORT,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS server: not ready within 30s")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("fedsender-bench"))
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		ns.Shutdown()
		return nil, err
	}
	return &natsServer{ns: ns, nc: nc, js: js}, nil
}

func (s *natsServer) close() {
	s.nc.Close()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// baselineStream is the baseline's own PDU stream (on its own server),
// configured as fedsender's PDU stream, so that streams.Publisher can feed it.
const baselineStream = "BENCH_BASELINE"

// runBaseline measures the practical limit of this machine for the same
// deliveries without fedsender: one consumer, each PDU read and
// canonicalised once, batches of 50, and per batch one signed transaction
// PUT to every receiver by a fixed pool of workers.
func runBaseline(ctx context.Context, e *env) (*throughput, error) {
	p := e.p
	s, err := startNATS(e.root + "/baseline-nats")
	if err != nil {
		return nil, err
	}
	defer s.close()
	if _, err := s.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       baselineStream,
		Subjects:   []string{streams.PDUSubject},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("baseline stream: %w", err)
	}
	f, err := e.newFleet(p.dests, nil, nil)
	if err != nil {
		return nil, err
	}
	defer f.close()
	client, err := federation.New(federation.Options{
		Origin:   origin,
		Key:      e.key,
		Resolver: resolve.New(resolve.Options{Logger: discardLogger}),
		Guard:    netguard.New(netguard.DefaultDenylist(), []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		RootCAs:  e.ca.Pool,
	})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		cancel()
	}
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr
	}

	// The reader: one ordered consumer, each PDU decoded and canonicalised
	// once (streams.DecodePDU).
	cons, err := s.js.OrderedConsumer(runCtx, baselineStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("baseline consumer: %w", err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return nil, fmt.Errorf("baseline consumer: %w", err)
	}
	items := make(chan streams.Item, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(items)
		for {
			msg, err := iter.Next(jetstream.NextContext(runCtx))
			if err != nil {
				if runCtx.Err() == nil {
					fail(fmt.Errorf("baseline consumer: %w", err))
				}
				return
			}
			md, err := msg.Metadata()
			if err != nil {
				fail(err)
				return
			}
			pdu, err := streams.DecodePDU(msg.Data())
			if err != nil {
				fail(fmt.Errorf("baseline: %w", err))
				return
			}
			select {
			case items <- streams.Item{Seq: md.Sequence.Stream, TS: md.Timestamp.UnixMilli(), PDU: pdu}:
			case <-runCtx.Done():
				return
			}
		}
	})

	// The sender: batches of up to 50; each batch goes to every receiver
	// (build, sign, PUT) on a pool of workers before the next batch starts,
	// so each destination has one transaction in flight, as the protocol
	// wants.
	type job struct {
		dest  string
		txnID string
		ts    int64
		pdus  []transaction.PDU
		done  *sync.WaitGroup
	}
	jobs := make(chan job)
	for range p.workers {
		wg.Go(func() {
			for j := range jobs {
				body, canonical := transaction.Build(origin, j.ts, j.pdus)
				if _, err := client.SendTransaction(runCtx, j.dest, j.txnID, body, canonical); err != nil && runCtx.Err() == nil {
					fail(fmt.Errorf("baseline: send to %s: %w", j.dest, err))
				}
				j.done.Done()
			}
		})
	}
	wg.Go(func() {
		defer close(jobs)
		batch := make([]streams.Item, 0, transaction.MaxPDUs)
		for {
			batch = batch[:0]
			it, ok := <-items
			if !ok {
				return
			}
			batch = append(batch, it)
		fill:
			for len(batch) < transaction.MaxPDUs {
				select {
				case it, ok := <-items:
					if !ok {
						break fill
					}
					batch = append(batch, it)
				default:
					break fill
				}
			}
			pdus := make([]transaction.PDU, len(batch))
			seqs := make([]uint64, len(batch))
			var ts int64
			for i, it := range batch {
				pdus[i] = transaction.PDU{Raw: it.PDU.Raw, Canonical: it.PDU.Canonical}
				seqs[i] = it.Seq
				ts = max(ts, it.TS)
			}
			txnID := transaction.ID("baseline", seqs)
			var done sync.WaitGroup
			done.Add(len(f.names))
			for _, d := range f.names {
				select {
				case jobs <- job{dest: d, txnID: txnID, ts: ts, pdus: pdus, done: &done}:
				case <-runCtx.Done():
					done.Done()
				}
			}
			done.Wait()
			if runCtx.Err() != nil {
				return
			}
		}
	})

	factory := newPDUFactory(f.names, p.pduSize)
	acks := newAckChecker()
	fd := &feeder{
		pub: streams.NewPublisher(s.js), acked: f.minCount, lead: p.lead, acks: acks,
		make: func(n int) []byte { return factory.envelope("bl", n, roomName(n%p.rooms)) },
	}
	wg.Go(func() { fd.run(runCtx) })
	w := windowed{
		count:   f.total,
		pending: func() bool { return f.minCount() < fd.count() },
		failed: func() error {
			if err := failed(); err != nil {
				return err
			}
			return acks.failed()
		},
		diagnose:   func() string { return pipelineState(f, fd.count()) },
		stallAfter: 10 * time.Second,
	}
	e.progress("baseline: %d receivers, %d PUT workers; warm-up %v, then %d × %v", p.dests, p.workers, p.warmup, p.windows, p.window)
	res := &throughput{EnvBytes: len(factory.envelope("bl", 0, roomName(0)))}
	res.Rates, err = w.measure(runCtx, p.warmup, p.window, p.windows)
	if ferr := failed(); ferr != nil {
		err = ferr
	}
	cancel()
	iter.Stop()
	wg.Wait()
	acks.finish() // the run is over; late acknowledgements do not matter
	res.Published = fd.count()
	res.Checks = f.checks()
	if err != nil {
		return nil, err
	}
	return res, nil
}
