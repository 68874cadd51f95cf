package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/anthdm/hollywood/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/fedsender/fedsender/actors/destination"
	"github.com/fedsender/fedsender/actors/partition"
	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/backoff"
	"github.com/fedsender/fedsender/internal/catchup"
	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/ingest"
	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/ownership"
	"github.com/fedsender/fedsender/internal/queuebudget"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
)

// Deps are what a caller may supply instead of the configured defaults
// (tests point the resolver at a local DNS server, say).
type Deps struct {
	Log      *slog.Logger
	Resolver *resolve.Resolver
	RootCAs  *x509.CertPool
	// Ready, when set, receives the service once it is serving.
	Ready chan<- *Service
	// TracerProvider and MeterProvider replace the ones built from the
	// OTEL_* environment and metrics.listen (tests record spans and read
	// metrics with them); see telemetry.go.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Service is a running fedsender.
type Service struct {
	AdminAddr   string // the admin listener's address, once serving
	MetricsAddr string // the /metrics listener's address, if it listens
	NATSURL     string // the embedded server's client URL, if it listens
	reader      *ingest.Reader
	eduReader   *ingest.EDUReader
	proj        *readModel
	nc          *nats.Conn
	ownership   *ownership.Manager
	feed        *synapseFeed // nil without synapse.database_url
}

// LoadOrCreateKey reads the signing key; with signing_key_path unset it
// generates <data_dir>/signing.key on first use.
func LoadOrCreateKey(cfg config.Config, log *slog.Logger) (xmatrix.SigningKey, error) {
	path := cfg.KeyPath()
	key, err := xmatrix.LoadKeyFile(path)
	if err == nil || cfg.SigningKeyPath != "" || !errors.Is(err, os.ErrNotExist) {
		if err != nil {
			return key, fmt.Errorf("signing_key_path: %w", err)
		}
		return key, nil
	}
	key, err = xmatrix.GenerateKey("a_" + strconv.FormatInt(time.Now().Unix()%1e6, 36))
	if err != nil {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return key, fmt.Errorf("data_dir: %w", err)
	}
	if err := os.WriteFile(path, key.MarshalKeyFile(), 0o600); err != nil {
		return key, fmt.Errorf("data_dir: write development signing key: %w", err)
	}
	log.Warn("generated a development signing key; point signing_key_path at your homeserver's key in production",
		"path", path, "key_id", key.KeyID())
	return key, nil
}

// Run runs fedsender until ctx ends.
func Run(ctx context.Context, cfg config.Config, deps Deps) error {
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.NATS.URL == "" {
		// The embedded server's store is this process's alone until it ends.
		unlock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	key, err := LoadOrCreateKey(cfg, log)
	if err != nil {
		return err
	}
	instance, err := cfg.Instance()
	if err != nil {
		return err
	}
	obs, err := newObservability(ctx, cfg, instance, deps, log)
	if err != nil {
		return err
	}
	defer obs.close()
	nc, natsURL, closeNATS, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer closeNATS()
	// Without a timeout an async publish whose ack is lost would never
	// resolve, and the event-log writer would wait for ever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := streams.Ensure(ctx, js, streams.Options{Replicas: cfg.NATS.Replicas, Retention: cfg.Queue.Retention}); err != nil {
		return err
	}
	var feed *synapseFeed
	if cfg.Synapse.DatabaseURL != "" {
		if feed, err = newSynapseFeed(ctx, cfg, js, nc, log); err != nil {
			return err
		}
		defer feed.close()
	}
	store, err := eventlog.Open(ctx, js)
	if err != nil {
		return err
	}
	client, err := newFederationClient(cfg, key, deps, obs)
	if err != nil {
		return err
	}
	defer client.Close()

	pduStream, err := js.Stream(ctx, streams.PDUStream)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	epoch := strconv.FormatInt(pduStream.CachedInfo().Created.Unix(), 36)

	n := cfg.Queue.Partitions
	engine, err := actor.NewEngine(actor.NewEngineConfig())
	if err != nil {
		return fmt.Errorf("actor engine: %w", err)
	}
	// Everything but the ownership runs on until the partitions are
	// drained and released after ctx ends.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	budget := queuebudget.New(cfg.Queue.MaxQueued)
	scanner := catchup.New(js)
	pcfg := &partition.Config{
		Destination: &destination.Config{
			Origin:  cfg.ServerName,
			Epoch:   epoch,
			Sender:  client,
			Scanner: scanner,
			Policy: backoff.Policy{Min: cfg.Backoff.MinInterval, Max: cfg.Backoff.MaxInterval,
				Multiplier: cfg.Backoff.Multiplier, CatchUpAfter: cfg.Backoff.CatchUpAfter},
			MaxPending: cfg.Queue.MaxPending,
			Budget:     budget,
			Slots:      make(chan struct{}, sendSlots(cfg)),
			SlotHold:   50 * time.Millisecond,
			Now:        time.Now,
			Log:        log,
			Tracer:     obs.tracer,
			Metrics:    obs.metrics,
			Chains:     store,
			EDUScanner: scanner,
		},
		Store:       store,
		WakeLimiter: rate.NewLimiter(rate.Limit(cfg.Queue.StartupWakeRate), 1),
		IdleTimeout: cfg.Queue.IdleTimeout,
		Checkpoint:  cfg.Queue.CheckpointInterval,
		// Every inbound request of a failing server signals it up: one
		// retry a minute is plenty.
		ServerUpInterval: time.Minute,
		Owner:            instance,
		Log:              log,
		Context:          runCtx,
	}
	// The readers start after the lowest watermark of all partitions: a
	// partition acquired later with a lower one has them read again.
	start, eduStart := uint64(0), uint64(0)
	for p := range n {
		wm, _, err := store.LoadWatermark(ctx, p)
		if err != nil {
			return err
		}
		if p == 0 || wm.Seq < start {
			start = wm.Seq
		}
		if p == 0 || wm.EDUSeq < eduStart {
			eduStart = wm.EDUSeq
		}
	}
	log.Info("fedsender starting", "server_name", cfg.ServerName, "instance", instance, "key_id", key.KeyID(),
		"partitions", n, "resume_after_sequence", start, "resume_after_edu_sequence", eduStart)

	proj, err := newReadModel(ctx, js, cfg, start, log)
	if err != nil {
		return err
	}
	recent := ingest.NewRecentEvents()
	// No partition is owned yet: ownership hands them to the readers.
	reader := ingest.New(ingest.Options{JS: js, Engine: engine, Partitions: make([]*actor.PID, n), Hold: true, Budget: budget, Start: start + 1, Origin: cfg.ServerName, Log: log,
		Observer: proj.observer(), Tracer: obs.tracer, Metrics: obs.metrics, Recent: recent})
	eduReader := ingest.NewEDUReader(ingest.EDUOptions{JS: js, Engine: engine, Partitions: make([]*actor.PID, n), Hold: true, Start: eduStart + 1,
		Origin: cfg.ServerName, Log: log, Metrics: obs.metrics, Recent: recent, ReceiptRate: cfg.Federation.ReceiptsPerRoomPerSecond})
	owned := &partitions{engine: engine, store: store, cfg: pcfg, reader: reader, eduReader: eduReader,
		metrics: obs.metrics, log: log, n: n, served: map[int]*served{}}
	mgr := ownership.New(ownership.Options{JS: js, Instance: instance, Partitions: n,
		Lease: lease.Options{TTL: cfg.Ownership.LeaseTTL}, DrainTimeout: cfg.Ownership.DrainTimeout,
		Handler: owned, Log: log, Metrics: obs.metrics, Tracer: obs.tracer,
		// The embedded server's data_dir is this process's alone.
		ReclaimOwn: cfg.NATS.URL == ""})
	svc := &Service{reader: reader, eduReader: eduReader, proj: proj, nc: nc, NATSURL: natsURL, ownership: mgr, feed: feed}

	var wg sync.WaitGroup
	errc := make(chan error, 16)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("reader", reader.Run)
	run("EDU reader", eduReader.Run)
	proj.start(run)
	if svc.MetricsAddr, err = obs.serveMetrics(cfg, run); err != nil {
		return err
	}
	if err := obs.observeProjectionLag(js, proj.index.Revision); err != nil {
		return err
	}
	if proj.pg != nil {
		if err := obs.observePostgresLag(proj.pg.proj.Behind); err != nil {
			return err
		}
	}
	if feed != nil {
		feed.start(run)
		if err := feed.observe(obs); err != nil {
			return err
		}
	}
	var resets admin.Resetter
	owners := leaseOwners{js: js, n: n}
	owned.control, resets = startCommands(run, nc, n, resetter{engine: engine, owned: owned}, proj, owners, log)
	// The manager gets ctx itself: when it ends, it drains and releases
	// the partitions while everything else still runs.
	mgrCtx, stopOwnership := context.WithCancel(ctx)
	defer stopOwnership()
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Run(mgrCtx) }()
	// The readers start once the partitions this replica can take at start
	// are claimed, so that they read once for all of them (or after two
	// lease TTLs, whatever ownership is then).
	go func() {
		select {
		case <-mgr.Settled():
		case <-time.After(2 * cfg.Ownership.LeaseTTL):
		case <-runCtx.Done():
		}
		reader.Begin()
		eduReader.Begin()
	}()

	if cfg.Admin.Listen != "" {
		var tokens []string
		if cfg.Admin.Token != "" {
			tokens = []string{cfg.Admin.Token}
		} else {
			log.Warn("admin.token is empty: the admin API refuses every request")
		}
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin.listen: %w", err)
		}
		svc.AdminAddr = ln.Addr().String()
		srv := &http.Server{
			Handler: admin.New(admin.Options{Tokens: tokens, Reader: proj, Rooms: proj.rooms,
				Resetter: resets, Ready: svc.ready, Owners: owners, Degraded: svc.degraded, Log: log}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		run("admin", func(ctx context.Context) error { return serveHTTP(ctx, srv, ln) })
		log.Info("admin API listening", "address", svc.AdminAddr)
	}
	if deps.Ready != nil {
		deps.Ready <- svc
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: draining the partitions")
	case runErr = <-errc:
		log.Error("stopping", "error", runErr)
	case err := <-mgrDone:
		runErr = fmt.Errorf("ownership: %w", err)
		mgrDone <- nil
		log.Error("stopping", "error", runErr)
	}
	stopOwnership()
	if err := <-mgrDone; err != nil && runErr == nil {
		runErr = fmt.Errorf("ownership: %w", err)
	}
	owned.stopAll()
	cancel()
	wg.Wait()
	log.Info("fedsender stopped")
	return runErr
}

// errNATSUnreachable is /readyz's reason while the NATS connection is down.
var errNATSUnreachable = errors.New("NATS is unreachable; reconnecting")

func (s *Service) ready() error {
	switch {
	case !s.nc.IsConnected():
		return errNATSUnreachable
	case !s.ownership.Ready():
		// The readers start after this.
		return errors.New("the partitions this replica is to own are not claimed yet")
	case !s.reader.Running():
		return errors.New("the PDU reader is not running")
	case !s.eduReader.Running():
		return errors.New("the EDU reader is not running")
	}
	return s.proj.notReady()
}

// degraded is what /readyz adds to its "ok": the Synapse feed polling.
func (s *Service) degraded() string {
	if s.feed == nil {
		return ""
	}
	return s.feed.degraded()
}

// resetter hands an admin reset to the destination's partition supervisor.
type resetter struct {
	engine *actor.Engine
	owned  *partitions
}

// Reset returns once the reset is durable, with the event-log sequence
// through which it is, or when ctx ends.
func (r resetter) Reset(ctx context.Context, dest string) (uint64, error) {
	type result struct {
		seq uint64
		err error
	}
	pid, err := r.owned.pid(dest)
	if err != nil {
		return 0, err
	}
	done := make(chan result, 1) // Done is called once and must not block
	r.engine.Send(pid, partition.Reset{Destination: dest,
		Done: func(seq uint64, err error) { done <- result{seq, err} }})
	select {
	case res := <-done:
		return res.seq, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ServerUp hands the homeserver's server_up signal to the supervisor.
func (r resetter) ServerUp(dest string) {
	if pid, err := r.owned.pid(dest); err == nil {
		r.engine.Send(pid, partition.ServerUp{Destination: dest})
	}
}

func newFederationClient(cfg config.Config, key xmatrix.SigningKey, deps Deps, obs *observability) (*federation.Client, error) {
	deny := cfg.Federation.IPRangeDenylist
	if len(deny) == 0 {
		deny = netguard.DefaultDenylist()
	}
	guard := netguard.New(deny, cfg.Federation.IPRangeAllowlist)
	roots := deps.RootCAs
	if cfg.Federation.CAFile != "" {
		pem, err := os.ReadFile(cfg.Federation.CAFile)
		if err != nil {
			return nil, fmt.Errorf("federation.ca_file: %w", err)
		}
		if roots == nil {
			if roots, err = x509.SystemCertPool(); err != nil {
				roots = x509.NewCertPool()
			}
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation.ca_file: no PEM certificates in %s", cfg.Federation.CAFile)
		}
	}
	res := deps.Resolver
	if res == nil {
		res = resolve.New(resolve.Options{
			HTTPClient: federation.NewWellKnownClient(federation.WellKnownClientOptions{
				Guard: guard, RootCAs: roots, InsecureSkipVerify: cfg.Federation.TLSInsecureSkipVerify,
			}),
			Tracer: obs.tracer, Metrics: obs.metrics,
		})
	}
	return federation.New(federation.Options{
		Origin: cfg.ServerName, Key: key, Resolver: res, Guard: guard, RootCAs: roots,
		InsecureSkipVerify: cfg.Federation.TLSInsecureSkipVerify, RequestTimeout: cfg.Federation.RequestTimeout,
		TracerProvider: obs.tp,
	})
}

// sendSlots is federation.send_slots, 0 meaning 4 per CPU.
func sendSlots(cfg config.Config) int {
	if cfg.Federation.SendSlots > 0 {
		return cfg.Federation.SendSlots
	}
	return 4 * runtime.GOMAXPROCS(0)
}

// serveHTTP serves srv on ln until ctx ends, then shuts it down, giving
// requests in flight 5 seconds.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
