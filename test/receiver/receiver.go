package receiver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("receiver: closed")

// ErrRunning is returned by Restart while the receiver is serving.
var ErrRunning = errors.New("receiver: already running")

// Receiver is a running fake homeserver. Its methods are safe for concurrent
// use.
type Receiver struct {
	opts       Options
	badCert    tls.Certificate
	addr       string // the resolved listen address, reused by Restart
	serverName string
	tlsConf    *tls.Config
	log        *slog.Logger

	useBadCert atomic.Bool
	requests   atomic.Int64
	pduCount   atomic.Int64

	mu      sync.Mutex
	gen     *generation // nil while stopped
	closed  bool
	changed chan struct{} // closed and replaced on every state change, for Wait
	fault   faultState
	flight  *flight // the transaction being processed; one origin, so one slot
	store   store
	headers []http.Header // with Options.KeepHeaders
	// sendReqs has every PUT /send request, with Options.Peer
	sendReqs []SendRequest
	dups     int
	viol     violations
}

// generation is one listening period, from New or Restart to Stop.
type generation struct {
	srv       *http.Server
	down      chan struct{} // closed by Stop: hung and waiting handlers give up
	serveDone chan struct{} // closed when Serve has returned
	drained   chan struct{} // closed when stopped and no handler is running
	active    int           // handlers running; guarded by Receiver.mu
	stopped   bool          // guarded by Receiver.mu
}

// New starts a receiver listening on opts.Addr.
func New(opts Options) (*Receiver, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	r := &Receiver{
		opts:    opts,
		badCert: opts.BadCert,
		log:     opts.Logger,
		changed: make(chan struct{}),
		fault:   faultState{changed: make(chan struct{})},
		store:   newStore(),
	}
	if len(r.badCert.Certificate) == 0 {
		c, err := untrustedCert()
		if err != nil {
			return nil, err
		}
		r.badCert = c
	}
	r.tlsConf = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.certificate,
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("receiver: listen: %w", err)
	}
	r.addr = l.Addr().String()
	r.serverName = opts.ServerName
	if r.serverName == "" {
		r.serverName = r.addr
	}
	r.log = r.log.With("destination", r.serverName)
	r.mu.Lock()
	r.serveLocked(l)
	r.mu.Unlock()
	return r, nil
}

func (r *Receiver) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if r.useBadCert.Load() {
		return &r.badCert, nil
	}
	return &r.opts.Cert, nil
}

func (r *Receiver) serveLocked(l net.Listener) {
	g := &generation{
		down:      make(chan struct{}),
		serveDone: make(chan struct{}),
		drained:   make(chan struct{}),
	}
	g.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.serveHTTP(g, w, req) }),
		TLSConfig:         r.tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext:       r.connPeer,
		// TLS handshake failures (the BadCert tests) and aborted requests
		// are expected here; keep them out of test output.
		ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	r.gen = g
	go func() {
		defer close(g.serveDone)
		_ = g.srv.ServeTLS(l, "", "") // always ErrServerClosed after Stop
	}()
	r.bumpLocked()
}

// ServerName is the destination name fedsender must use for this receiver.
func (r *Receiver) ServerName() string { return r.serverName }

// Addr is the address the receiver listens on, "127.0.0.1:PORT".
func (r *Receiver) Addr() string { return r.addr }

// UseBadCert switches the certificate presented to new TLS connections:
// Options.BadCert when bad is true, Options.Cert when false. Connections
// already open keep theirs.
func (r *Receiver) UseBadCert(bad bool) { r.useBadCert.Store(bad) }

// Stop closes the listener and every connection, as a crashed server would:
// the port then refuses connections. Requests in progress are cut off,
// hung ones included, and not recorded. Stop waits for their handlers to
// return. It does nothing when already stopped.
func (r *Receiver) Stop() {
	r.mu.Lock()
	g := r.gen
	if g == nil {
		r.mu.Unlock()
		return
	}
	r.gen = nil
	g.stopped = true
	close(g.down)
	if g.active == 0 {
		close(g.drained)
	}
	r.bumpLocked()
	r.mu.Unlock()

	_ = g.srv.Close() // the error is the listener's, already closing
	<-g.serveDone
	<-g.drained
}

// Restart listens again on the same address after Stop. Recorded state
// (PDUs, transactions, the txnId cache, violations) survives, as a real
// server's database would.
func (r *Receiver) Restart() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.gen != nil {
		return ErrRunning
	}
	l, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("receiver: listen again on %s: %w", r.addr, err)
	}
	r.serveLocked(l)
	return nil
}

// Close stops the receiver for good and waits for every handler to return.
// It may be called more than once.
func (r *Receiver) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.Stop()
}

// enter registers a handler with its generation; false when the generation
// is already stopped.
func (r *Receiver) enter(g *generation) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.stopped {
		return false
	}
	g.active++
	return true
}

func (r *Receiver) leave(g *generation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g.active--
	if g.stopped && g.active == 0 {
		close(g.drained)
	}
}

// bumpLocked wakes every Wait. The caller holds r.mu.
func (r *Receiver) bumpLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}
