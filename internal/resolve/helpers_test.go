package resolve_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/resolve/resolvetest"
	"github.com/fedsender/fedsender/test/pki"
)

// env is a test world: a DNS server for names under .test., one HTTPS server
// on 127.0.0.1 answering .well-known for any of them, and a settable clock.
type env struct {
	dns   *resolvetest.DNS
	wk    *wellKnownServer
	clock *clock
	ca    *pki.CA
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca := pki.MustCA(t)
	return &env{
		dns:   resolvetest.NewDNS(t),
		wk:    newWellKnownServer(t, ca),
		clock: &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		ca:    ca,
	}
}

// resolver returns a Resolver wired to the env; change adjusts its options.
func (e *env) resolver(t *testing.T, change func(*resolve.Options)) *resolve.Resolver {
	t.Helper()
	dialer := &net.Dialer{Resolver: e.dns.Resolver(), Timeout: 5 * time.Second}
	transport := &http.Transport{
		DialContext:     dialer.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool},
	}
	t.Cleanup(transport.CloseIdleConnections)
	opts := resolve.Options{
		Resolver:          e.dns.Resolver(),
		HTTPClient:        &http.Client{Transport: transport},
		WellKnownPort:     e.wk.port,
		Now:               e.clock.Now,
		DNSCacheTTL:       5 * time.Minute,
		WellKnownErrorTTL: 10 * time.Minute,
	}
	if change != nil {
		change(&opts)
	}
	return resolve.New(opts)
}

// serve makes host a name whose .well-known is answered by h.
func (e *env) serve(t *testing.T, host string, h http.HandlerFunc) {
	t.Helper()
	e.dns.Add(t, host+". 60 IN A 127.0.0.1")
	e.wk.handle(host, h)
}

// delegate makes host's .well-known answer {"m.server": server}.
func (e *env) delegate(t *testing.T, host, server string, headers ...string) {
	t.Helper()
	e.serve(t, host, jsonHandler(fmt.Sprintf(`{"m.server": %q}`, server), headers...))
}

// jsonHandler answers 200 with body and the given header name/value pairs.
func jsonHandler(body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}
}

type wellKnownServer struct {
	port     int
	conns    atomic.Int64 // TCP connections accepted
	mu       sync.Mutex
	handlers map[string]http.HandlerFunc
	hits     map[string]int
}

func newWellKnownServer(t *testing.T, ca *pki.CA) *wellKnownServer {
	t.Helper()
	w := &wellKnownServer{handlers: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	srv := httptest.NewUnstartedServer(w)
	var certs sync.Map // SNI name -> *tls.Certificate
	srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c, ok := certs.Load(hello.ServerName); ok {
			return c.(*tls.Certificate), nil
		}
		c, err := ca.Leaf(hello.ServerName)
		if err != nil {
			return nil, err
		}
		certs.Store(hello.ServerName, &c)
		return &c, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS failures are what some tests provoke
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			w.conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	w.port, _ = strconv.Atoi(port)
	return w
}

func (w *wellKnownServer) handle(host string, h http.HandlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[host] = h
}

// hitCount reports how many requests arrived for host.
func (w *wellKnownServer) hitCount(host string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[host]
}

func (w *wellKnownServer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	w.mu.Lock()
	w.hits[host]++
	h := w.handlers[host]
	w.mu.Unlock()
	if h == nil {
		http.NotFound(rw, r)
		return
	}
	h(rw, r)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
