package federation_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
)

const origin = "origin.test"

// receiver is a real HTTPS server on 127.0.0.1 standing in for a destination.
type receiver struct {
	srv   *httptest.Server
	dest  string       // "127.0.0.1:port", an IP-literal server name
	port  string       // the listening port
	conns atomic.Int64 // TCP connections accepted
}

// newReceiver starts h behind a certificate from ca for the given names
// (default: 127.0.0.1).
func newReceiver(t *testing.T, ca *pki.CA, h http.HandlerFunc, names ...string) *receiver {
	t.Helper()
	if len(names) == 0 {
		names = []string{"127.0.0.1"}
	}
	rv := &receiver{srv: httptest.NewUnstartedServer(h)}
	rv.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.MustLeaf(t, names...)}}
	rv.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS failures are what some tests provoke
	rv.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			rv.conns.Add(1)
		}
	}
	rv.srv.StartTLS()
	t.Cleanup(func() {
		// Close waits for handlers; closing the connections first ends
		// any that still wait on their request's context.
		rv.srv.CloseClientConnections()
		rv.srv.Close()
	})
	rv.dest = rv.srv.Listener.Addr().String()
	_, rv.port, _ = net.SplitHostPort(rv.dest)
	return rv
}

// loopbackGuard is the default denylist with loopback allowed, as tests
// that send to local servers configure it.
func loopbackGuard() *netguard.Guard {
	return netguard.New(netguard.DefaultDenylist(), []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
	})
}

func newKey(t *testing.T) xmatrix.SigningKey {
	t.Helper()
	key, err := xmatrix.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newClient returns a Client trusting ca and allowing loopback; change
// adjusts the options.
func newClient(t *testing.T, ca *pki.CA, key xmatrix.SigningKey, change func(*federation.Options)) *federation.Client {
	t.Helper()
	opts := federation.Options{
		Origin:         origin,
		Key:            key,
		Resolver:       resolve.New(resolve.Options{}),
		Guard:          loopbackGuard(),
		RootCAs:        ca.Pool,
		RequestTimeout: 10 * time.Second,
	}
	if change != nil {
		change(&opts)
	}
	c, err := federation.New(opts)
	if err != nil {
		t.Fatalf("federation.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// matrixError answers status with a Matrix error body and header pairs.
func matrixError(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

// hangingHandler never answers: it returns when its connection closes, which
// the client does when it gives up and the receiver's cleanup does at the
// latest. arrived, if not nil, is closed when the first request is in.
func hangingHandler(arrived chan struct{}) http.HandlerFunc {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request) {
		// The server notices a closed connection only once the body is read.
		io.Copy(io.Discard, r.Body)
		if arrived != nil {
			once.Do(func() { close(arrived) })
		}
		// If the client gave up before the body was read to its end, the
		// server never watches the connection and the request context is
		// never cancelled; the bound keeps the test server's Close from
		// waiting on this handler for ever.
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}
}
