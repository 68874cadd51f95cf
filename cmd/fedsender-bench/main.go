// Command fedsender-bench measures fedsender end to end on this machine and
// prints a table, then, as its last line, one JSON object of the figures.
//
// It runs six parts, each on its own fedsender instance (service.Run
// in-process, on the embedded NATS server, in a temporary data directory)
// and its own HTTPS receivers (package test/receiver) in the same process:
//
//   - pipeline: the sustained rate of (PDU, destination) deliveries that
//     receivers acknowledge, 200 destinations, 20 rooms, every PDU to every
//     destination, PDUs of about 1 KiB, the publisher kept at most about
//     2000 PDUs ahead of what every receiver has acknowledged; then the
//     publish-to-receiver latency at 20% of that rate (p99_ms, PDUs only).
//   - mixed: on its own fedsender and 200 receivers, the latency phase's
//     PDUs (20% of the pipeline part's sustained rate, measured first here
//     when that part did not run), from 50 senders, each followed by its
//     sender's m.receipt and m.presence to every destination; beside them a
//     typing storm (-typing-rate, 1000 m.typing a second across the rooms,
//     50 users typing in each, to every destination) and two bursts of
//     10,000 m.direct_to_device messages, each to one destination, round
//     robin. It reports the PDUs' p99 under this load (mixed_p99_ms), the
//     to-device messages' from publish to the receiver's acceptance
//     (edu_p99_ms; each must arrive once), the EDUs the receivers accepted
//     per second (edus_per_sec), and typing, receipts and presence
//     published per EDU sent ((EDU, destination) pairs published over EDUs
//     accepted: edu_coalescing_ratio). Then a tenth of the receivers stop
//     for 5 s while receipts, presence and typing keep coming; once the
//     load stops and the healthy destinations have sent theirs,
//     fedsender's gauge fedsender_federation_edus_held_bytes is the memory
//     held for the down destinations' coalesced EDUs
//     (coalesced_bytes_held); the receivers start again, fedsender hears
//     fedsender.server_up for them, and the gauge must fall to 0.
//   - baseline: the machine's practical limit for the same work without
//     fedsender: one consumer of a stream of its own reads each PDU once,
//     canonicalises it once, batches 50, and for each receiver builds, signs
//     and PUTs one transaction over HTTPS keep-alive on a small worker pool.
//   - rss: the resident memory an idle known destination costs, from two
//     child processes (this binary re-executed) that start fedsender on
//     0 and on 100,000 preloaded healthy destinations.
//   - catchup: the time a destination back from an outage needs to receive
//     the newest PDU of each of 10,000 rooms, after an admin reset.
//   - admin: the latency of the admin API's destinations list at 100,000
//     destinations (a quarter failing), pages of 100 at random offsets, for
//     every order_by in both directions and for substring searches (p50,
//     p99, max), and how long a new state takes to show.
//   - tracing (only when -only names it): the pipeline's sustained rate with
//     tracing off (the default) and on (every span sampled and exported to
//     an in-memory exporter), alternating, and the overhead.
//   - postgres (only when -only names it; FEDSENDER_BENCH_POSTGRES_URL, or
//     a throwaway server from the installed binaries): the PostgreSQL read
//     model's projector events/s into an empty schema and, at the admin
//     part's 100,000 destinations, its list p50/p99 per order, searches,
//     and pages after a hundredth of the rows changed; then the pipeline's
//     sustained load without and with postgres.url set, alternating
//     (deliveries/s, the projector's lag and catch-up), and the rooms
//     projector's PDUs/s on backlogs.
//   - scaleout (only when -only names it): real `fedsender run` processes
//     on a three-node NATS cluster: one replica's sustained deliveries/s
//     against three's, what each replica reads from NATS per PDU (and a
//     projection to 20 replicas), the failover of a replica killed -9
//     (from the kill to the next delivery to each of its destinations),
//     and the latency p99 around the kill and around a rebalance.
//   - synapse (only when -only names it; PostgreSQL and redis-server from
//     the installed binaries): the Synapse feed on its own, from a
//     Synapse-shaped database (test/synapsefixture's schema, 1,000 rooms of
//     2 to 200 servers) to envelopes JetStream acknowledged: events/s with
//     and without Synapse's Redis cache of joined hosts, the feed's
//     database time per event (pg_stat_statements, the feed logged in as
//     its own role), and the lag from commit to envelope at a fifth of
//     the rate with RDATA wake-ups (synapse.go).
//
// Flags: -short runs smaller sizes for a quick check (the synapse part: 100
// rooms, a backlog of 3,000; the mixed part: 20
// destinations, bursts of 1,000, 3 s down); -only runs the named parts
// (comma separated: pipeline, mixed, baseline, rss, catchup, admin;
// latency is part of pipeline); -latency-cpuprofile and -mixed-cpuprofile
// write CPU profiles of the whole process (fedsender, receivers and
// publisher) during the latency phase and the mixed load. Run it with `go tool task bench` (or go run
// ./cmd/fedsender-bench). It exits non-zero, after printing what it could
// measure, if any part fails.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// params are the sizes of a run.
type params struct {
	short      bool
	dests      int           // receivers of the throughput parts
	rooms      int           // rooms the throughput PDUs rotate over
	pduSize    int           // target size of a PDU's JSON, bytes
	lead       int64         // how far the publisher may run ahead, in PDUs
	warmup     time.Duration // before the measured windows
	windows    int           // measured sub-windows
	window     time.Duration // length of each
	latencyFor time.Duration // the latency phase's publishing time
	latencyPct float64       // its rate, as a fraction of the sustained rate
	typingRate int           // the mixed part's typing EDUs a second
	workers    int           // the baseline's PUT worker pool
	idleDests  int           // known idle destinations of the rss part
	cuRooms    int           // rooms pending for the catch-up part
	cuPending  int           // queue.max_pending of the catch-up part
	verifySigs bool          // receivers verify the ed25519 signatures
	// admin part: destinations listed, list requests per order_by, samples
	// of a new state's visibility
	adminDests, adminRequests, adminVisible int
}

func defaultParams(short, verify bool) params {
	p := params{
		short:      short,
		dests:      200,
		rooms:      20,
		pduSize:    1024,
		lead:       2000,
		warmup:     4 * time.Second,
		windows:    4,
		window:     5 * time.Second,
		latencyFor: 10 * time.Second,
		latencyPct: 0.20,
		typingRate: 1000,
		workers:    8,
		idleDests:  100_000,
		cuRooms:    10_000,
		cuPending:  1000,
		verifySigs: verify,

		adminDests:    100_000,
		adminRequests: 400,
		adminVisible:  20,
	}
	if short {
		p.dests = 20
		p.rooms = 5
		p.lead = 500
		p.warmup = time.Second
		p.windows = 2
		p.window = 2 * time.Second
		p.latencyFor = 3 * time.Second
		p.idleDests = 10_000
		p.cuRooms = 2000
		p.cuPending = 200
		p.adminDests = 10_000
		p.adminRequests = 100
		p.adminVisible = 5
	}
	return p
}

var allParts = []string{"pipeline", "mixed", "baseline", "catchup", "rss", "admin"}

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("fedsender-bench", flag.ContinueOnError)
	short := fs.Bool("short", false, "smaller sizes, for a quick check (about 40 s)")
	only := fs.String("only", "", "run only these parts, comma separated: pipeline (with latency), mixed, baseline, rss, catchup, admin; and tracing (off vs on), postgres, scaleout and synapse, only when named")
	verify := fs.Bool("verify-signatures", false, "make the receivers verify every ed25519 signature (they share the CPU with the sender)")
	latencyFraction := fs.Float64("latency-fraction", 0.20, "the latency phase's rate, as a fraction of the sustained rate")
	typingRate := fs.Int("typing-rate", 1000, "the mixed part's typing storm, typing EDUs a second across the rooms (a multiple of 100; 0: none)")
	fs.StringVar(&latencyProfile, "latency-cpuprofile", "", "write a CPU profile of the latency phase to this file")
	fs.StringVar(&mixedProfile, "mixed-cpuprofile", "", "write a CPU profile of the mixed load (before its down phase) to this file")
	childDir := fs.String("child-rss", "", "internal: run fedsender on this data directory for the rss part")
	childKey := fs.String("child-key", "", "internal: the signing key of -child-rss")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: fedsender-bench [-short] [-only parts] [-verify-signatures]\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.HasPrefix(f.Name, "child-") {
				fmt.Fprintf(fs.Output(), "  -%s\n    \t%s\n", f.Name, f.Usage)
			}
		})
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fedsender-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	// hollywood and other libraries log through the default logger.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if *childDir != "" {
		return childRSS(*childDir, *childKey)
	}

	parts := allParts
	if *only != "" {
		parts = nil
		for _, name := range strings.Split(*only, ",") {
			name = strings.TrimSpace(name)
			if name == "latency" {
				name = "pipeline"
			}
			if !slices.Contains(allParts, name) && !slices.Contains(optionalParts, name) {
				fmt.Fprintf(os.Stderr, "fedsender-bench: -only: unknown part %q (want %s)\n", name, strings.Join(allParts, ", "))
				return 2
			}
			if !slices.Contains(parts, name) {
				parts = append(parts, name)
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	p := defaultParams(*short, *verify)
	if *latencyFraction <= 0 || *latencyFraction > 1 {
		fmt.Fprintf(os.Stderr, "fedsender-bench: -latency-fraction must be in (0, 1], got %v\n", *latencyFraction)
		return 2
	}
	p.latencyPct = *latencyFraction
	if *typingRate < 0 || *typingRate%100 != 0 {
		fmt.Fprintf(os.Stderr, "fedsender-bench: -typing-rate must be a non-negative multiple of 100, got %d\n", *typingRate)
		return 2
	}
	p.typingRate = *typingRate
	e, err := newEnv(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fedsender-bench: setup: %v\n", err)
		return 1
	}
	defer e.close()

	res := &results{params: p, parts: parts, started: time.Now()}
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(res.started).Seconds(), fmt.Sprintf(format, args...))
	}
	e.progress = progress
	for _, part := range parts {
		if ctx.Err() != nil {
			res.fail(part, ctx.Err())
			continue
		}
		progress("%s: starting", part)
		var err error
		switch part {
		case "pipeline":
			res.pipeline, res.latency, err = runPipeline(ctx, e)
		case "mixed":
			res.mixed, err = runMixed(ctx, e, res.sustained())
		case "baseline":
			res.baseline, err = runBaseline(ctx, e)
		case "rss":
			res.rss, err = runRSS(ctx, e)
		case "catchup":
			res.catchup, err = runCatchup(ctx, e)
		case "tracing":
			res.tracing, err = runTracing(ctx, e)
		case "admin":
			res.admin, err = runAdmin(ctx, e)
		case "postgres":
			res.postgres, err = runPostgres(ctx, e)
		case "scaleout":
			res.scaleout, err = runScaleout(ctx, e)
		case "synapse":
			res.synapse, err = runSynapse(ctx, e)
		}
		if err != nil {
			progress("%s: FAILED: %v", part, err)
			res.fail(part, err)
		} else {
			progress("%s: done", part)
		}
	}
	res.elapsed = time.Since(res.started)
	res.print(os.Stdout)
	if len(res.errors) > 0 {
		for _, msg := range res.errors {
			fmt.Fprintf(os.Stderr, "fedsender-bench: %s\n", msg)
		}
		return 1
	}
	return 0
}

// discardLogger is for components whose logs would only be noise here.
var discardLogger = slog.New(slog.DiscardHandler)

// errLogger logs errors to stderr; the services under test use it.
var errLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
