package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
)

const (
	origin     = "origin.test"
	adminToken = "bench-admin-token"
)

// env is what every part shares: a temporary directory, the origin's
// signing key, and the CA the receivers' certificate comes from.
type env struct {
	p        params
	root     string
	key      xmatrix.SigningKey
	keyPath  string
	ca       *pki.CA
	cert     tls.Certificate
	progress func(format string, args ...any)
}

func newEnv(p params) (*env, error) {
	root, err := os.MkdirTemp("", "fedsender-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{p: p, root: root, progress: func(string, ...any) {}}
	if e.key, err = xmatrix.GenerateKey("bench"); err != nil {
		e.close()
		return nil, err
	}
	e.keyPath = filepath.Join(root, "signing.key")
	if err := os.WriteFile(e.keyPath, e.key.MarshalKeyFile(), 0o600); err != nil {
		e.close()
		return nil, err
	}
	if e.ca, err = pki.NewCA(); err != nil {
		e.close()
		return nil, err
	}
	// One certificate serves every receiver: they all are 127.0.0.1.
	if e.cert, err = e.ca.Leaf("127.0.0.1"); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() { os.RemoveAll(e.root) }

// baseConfig is the configuration every fedsender of the bench starts
// from: the e2e harness's, with 64 partitions and errors-only logging.
func baseConfig(dataDir, keyPath string) config.Config {
	cfg := config.Default()
	cfg.ServerName = origin
	cfg.SigningKeyPath = keyPath
	cfg.DataDir = dataDir
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.MaxStore = 4 << 30
	cfg.NATS.MaxMemory = 64 << 20
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Token = adminToken
	cfg.Metrics.Listen = "127.0.0.1:0" // on, as in production
	cfg.Federation.IPRangeAllowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.Queue.Partitions = 64
	cfg.Log.Level = "error"
	return cfg
}

// config returns a validated configuration with its own data directory.
func (e *env) config(name string, mutate func(*config.Config)) (config.Config, error) {
	cfg := baseConfig(filepath.Join(e.root, name), e.keyPath)
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("bench configuration: %w", err)
	}
	return cfg, nil
}

// instance is a fedsender running in this process, and a client of its
// NATS server.
type instance struct {
	svc    *service.Service
	cancel context.CancelFunc
	done   chan error
	nc     *nats.Conn
	js     jetstream.JetStream
	pub    *streams.Publisher
}

// startService runs fedsender as the e2e harness does.
func (e *env) startService(cfg config.Config) (*instance, error) {
	return e.startServiceDeps(cfg, service.Deps{})
}

// startServiceDeps is startService with deps' tracer and meter providers.
func (e *env) startServiceDeps(cfg config.Config, deps service.Deps) (*instance, error) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *service.Service, 1)
	done := make(chan error, 1)
	deps.Log, deps.RootCAs, deps.Ready = errLogger, e.ca.Pool, ready
	go func() {
		done <- service.Run(ctx, cfg, deps)
	}()
	in := &instance{cancel: cancel, done: done}
	select {
	case in.svc = <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("fedsender did not start: %w", err)
	case <-time.After(60 * time.Second):
		cancel()
		return nil, errors.New("fedsender did not start within 60s")
	}
	nc, err := nats.Connect(in.svc.NATSURL, nats.Name("fedsender-bench"))
	if err != nil {
		in.stop()
		return nil, fmt.Errorf("connect to fedsender's NATS server: %w", err)
	}
	in.nc = nc
	if in.js, err = jetstream.New(nc); err != nil {
		in.stop()
		return nil, err
	}
	in.pub = streams.NewPublisher(in.js)
	return in, nil
}

// stop stops fedsender and reports how it ended.
func (in *instance) stop() error {
	if in.nc != nil {
		in.nc.Close()
	}
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			return fmt.Errorf("fedsender stopped with an error: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("fedsender did not stop within 30s")
	}
}

// fleet is a set of receivers, each a destination named "127.0.0.1:PORT".
type fleet struct {
	rs    []*receiver.Receiver
	names []string
}

// newFleet starts n receivers. onPDU and onEDU, when set, see every PDU
// and EDU of every newly accepted transaction; the receivers keep no EDU.
func (e *env) newFleet(n int, onPDU func(eventID string, at time.Time), onEDU func(receiver.EDU)) (*fleet, error) {
	return e.newFleetWith(n, onPDU, onEDU, nil)
}

// newFleetWith is newFleet with each receiver's options changed by mutate
// (nil: none).
func (e *env) newFleetWith(n int, onPDU func(eventID string, at time.Time), onEDU func(receiver.EDU), mutate func(*receiver.Options)) (*fleet, error) {
	f := &fleet{}
	for range n {
		opts := receiver.Options{
			Origin:             origin,
			OriginKey:          e.key.Public(),
			OriginKeyID:        e.key.KeyID(),
			Cert:               e.cert,
			SkipSignatureCheck: !e.p.verifySigs,
			OnEDU:              onEDU,
			DiscardEDUs:        true,
		}
		if onPDU != nil {
			opts.OnPDU = func(eventID, _ string, at time.Time) { onPDU(eventID, at) }
		}
		if mutate != nil {
			mutate(&opts)
		}
		r, err := receiver.New(opts)
		if err != nil {
			f.close()
			return nil, err
		}
		f.rs = append(f.rs, r)
		f.names = append(f.names, r.ServerName())
	}
	return f, nil
}

func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, r := range f.rs {
		wg.Go(r.Close)
	}
	wg.Wait()
}

// total is the number of PDUs all receivers accepted.
func (f *fleet) total() int64 {
	var n int64
	for _, r := range f.rs {
		n += int64(r.PDUCount())
	}
	return n
}

// minCount is the PDU count of the receiver that has the fewest: every PDU
// up to it is acknowledged by every receiver (PDUs arrive in order).
func (f *fleet) minCount() int64 {
	m := int64(-1)
	for _, r := range f.rs {
		if c := int64(r.PDUCount()); m < 0 || c < m {
			m = c
		}
	}
	return max(m, 0)
}

func (f *fleet) maxCount() int64 {
	var m int64
	for _, r := range f.rs {
		m = max(m, int64(r.PDUCount()))
	}
	return m
}

// checks sums what the receivers noticed.
type checks struct {
	Violations  int      `json:"violations"`
	Redelivered int      `json:"redelivered_pdus"`
	Duplicates  int      `json:"duplicate_requests"`
	Requests    int      `json:"requests"`
	Examples    []string `json:"-"`
}

func (f *fleet) checks() checks {
	var c checks
	for _, r := range f.rs {
		c.Violations += r.ViolationCount()
		c.Redelivered += r.RedeliveredPDUs()
		c.Duplicates += r.Duplicates()
		c.Requests += r.Requests()
		if v := r.Violations(); len(v) > 0 && len(c.Examples) < 3 {
			c.Examples = append(c.Examples, r.ServerName()+": "+v[0])
		}
	}
	return c
}

// since is what the receivers noticed after before was taken; examples
// are all of them.
func (c checks) since(before checks) checks {
	return checks{
		Violations:  c.Violations - before.Violations,
		Redelivered: c.Redelivered - before.Redelivered,
		Duplicates:  c.Duplicates - before.Duplicates,
		Requests:    c.Requests - before.Requests,
		Examples:    c.Examples,
	}
}
