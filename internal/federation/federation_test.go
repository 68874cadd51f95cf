package federation_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/resolve/resolvetest"
	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
)

// A transaction body as a caller has it: the bytes to send are not
// canonical (spacing, key order), the signature covers the canonical form.
const (
	txnBody      = `{"pdus": [], "origin_server_ts": 1, "origin": "origin.test"}`
	txnCanonical = `{"origin":"origin.test","origin_server_ts":1,"pdus":[]}`
)

// seen is what a receiver recorded about one request.
type seen struct {
	method, uri, host, sni string
	header                 http.Header
	body                   []byte
	authErr                error
	auth                   xmatrix.Authorization
}

// recordingHandler verifies the X-Matrix signature of each request with
// key's public half, records it and answers with respond.
func recordingHandler(key xmatrix.SigningKey, respond http.HandlerFunc) (http.HandlerFunc, func() []seen) {
	var mu sync.Mutex
	var all []seen
	h := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := seen{method: r.Method, uri: r.URL.RequestURI(), host: r.Host, header: r.Header.Clone(), body: body}
		if r.TLS != nil {
			s.sni = r.TLS.ServerName
		}
		s.auth, s.authErr = xmatrix.ParseAuthorization(r.Header.Get("Authorization"))
		if s.authErr == nil {
			s.authErr = xmatrix.VerifyRequest(key.Public(), s.auth, r.Method, r.URL.RequestURI(), body)
		}
		mu.Lock()
		all = append(all, s)
		mu.Unlock()
		respond(w, r)
	}
	return h, func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(all)
	}
}

func TestSendTransactionSuccess(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)
	h, requests := recordingHandler(key, matrixError(200,
		`{"pdus": {"$ok": {}, "$bad": {"error": "not allowed"}, "$odd": {"error": {"code": 1}}, "$weird": "x"}}`))
	rv := newReceiver(t, ca, h)
	c := newClient(t, ca, key, nil)

	res, err := c.SendTransaction(testContext(t), rv.dest, "txn-1_A", []byte(txnBody), []byte(txnCanonical))
	if err != nil {
		t.Fatalf("SendTransaction: %v", err)
	}
	wantErrs := map[string]string{"$bad": "not allowed", "$odd": `{"code": 1}`}
	if !maps.Equal(res.PDUErrors, wantErrs) {
		t.Errorf("PDUErrors = %v, want %v", res.PDUErrors, wantErrs)
	}

	got := requests()
	if len(got) != 1 {
		t.Fatalf("receiver saw %d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != http.MethodPut || r.uri != "/_matrix/federation/v1/send/txn-1_A" {
		t.Errorf("request = %s %s", r.method, r.uri)
	}
	if r.host != rv.dest {
		t.Errorf("Host = %q, want the server name %q", r.host, rv.dest)
	}
	if string(r.body) != txnBody {
		t.Errorf("body = %q, want the exact bytes given %q", r.body, txnBody)
	}
	if r.authErr != nil {
		t.Errorf("X-Matrix does not verify: %v (header %q)", r.authErr, r.header.Get("Authorization"))
	}
	if r.auth.Origin != origin || r.auth.Destination != rv.dest || r.auth.KeyID != "ed25519:test" {
		t.Errorf("Authorization = %+v", r.auth)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	// Only what Matrix needs: no tracing, no compression negotiation.
	allowed := []string{"Authorization", "Content-Type", "Content-Length", "User-Agent"}
	for name := range r.header {
		if !slices.Contains(allowed, name) {
			t.Errorf("unexpected request header %s: %q", name, r.header.Values(name))
		}
	}
	for _, name := range []string{"Traceparent", "Tracestate", "Baggage"} {
		if v := r.header.Values(name); len(v) > 0 {
			t.Errorf("request carries %s: %q", name, v)
		}
	}
}

func TestSuccessBodies(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)
	tests := []struct{ name, body string }{
		{"not JSON", "OK"},
		{"empty", ""},
		{"no pdus", `{}`},
		{"pdus not an object", `{"pdus": []}`},
		{"all accepted", `{"pdus": {"$a": {}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv := newReceiver(t, ca, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tt.body)) })
			c := newClient(t, ca, key, nil)
			res, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
			if err != nil {
				t.Fatalf("SendTransaction: %v", err)
			}
			if len(res.PDUErrors) != 0 {
				t.Errorf("PDUErrors = %v, want none", res.PDUErrors)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)
	tests := []struct {
		name    string
		h       http.HandlerFunc
		class   federation.Class
		status  int
		errcode string
		message string
		retry   time.Duration
	}{
		{"429 Retry-After seconds", matrixError(429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`, "Retry-After", "7"),
			federation.ClassRateLimited, 429, "M_LIMIT_EXCEEDED", "slow down", 7 * time.Second},
		{"429 retry_after_ms", matrixError(429, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}`),
			federation.ClassRateLimited, 429, "M_LIMIT_EXCEEDED", "slow down", 1500 * time.Millisecond},
		{"429 header wins over body", matrixError(429, `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}`, "Retry-After", "3"),
			federation.ClassRateLimited, 429, "M_LIMIT_EXCEEDED", "", 3 * time.Second},
		{"429 concurrent transactions, no hint", matrixError(429, `{"errcode":"M_UNKNOWN","error":"Too many concurrent transactions"}`),
			federation.ClassRateLimited, 429, "M_UNKNOWN", "Too many concurrent transactions", 0},
		{"429 absurd Retry-After capped", matrixError(429, `{}`, "Retry-After", "99999999999999999"),
			federation.ClassRateLimited, 429, "", "", 7 * 24 * time.Hour},
		{"500", matrixError(500, `{"errcode":"M_UNKNOWN","error":"Internal server error"}`),
			federation.ClassServer, 500, "M_UNKNOWN", "Internal server error", 0},
		{"502 plain text", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "Bad Gateway", 502) },
			federation.ClassServer, 502, "", "", 0},
		{"503 Retry-After", matrixError(503, ``, "Retry-After", "30"),
			federation.ClassServer, 503, "", "", 30 * time.Second},
		{"401", matrixError(401, `{"errcode":"M_UNAUTHORIZED","error":"Invalid signature"}`),
			federation.ClassUnauthorized, 401, "M_UNAUTHORIZED", "Invalid signature", 0},
		{"403", matrixError(403, `{"errcode":"M_FORBIDDEN","error":"Federation denied with origin.test."}`),
			federation.ClassUnauthorized, 403, "M_FORBIDDEN", "Federation denied with origin.test.", 0},
		{"400", matrixError(400, `{"errcode":"M_BAD_JSON","error":"too many pdus"}`),
			federation.ClassRejected, 400, "M_BAD_JSON", "too many pdus", 0},
		{"404", matrixError(404, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`),
			federation.ClassRejected, 404, "M_UNRECOGNIZED", "Unrecognized request", 0},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/", http.StatusTemporaryRedirect)
		}, federation.ClassRejected, 307, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv := newReceiver(t, ca, tt.h)
			c := newClient(t, ca, key, nil)
			_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
			se := asSendError(t, err)
			if se.Class != tt.class || se.Status != tt.status || se.Errcode != tt.errcode || se.Message != tt.message || se.RetryAfter != tt.retry {
				t.Errorf("got %+v\nwant class %v status %d errcode %q message %q retry %v",
					*se, tt.class, tt.status, tt.errcode, tt.message, tt.retry)
			}
			if !errors.Is(err, federation.ErrStatus) {
				t.Errorf("%v does not wrap ErrStatus", err)
			}
		})
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	ca := pki.MustCA(t)
	rv := newReceiver(t, ca, func(w http.ResponseWriter, r *http.Request) {
		matrixError(429, `{}`, "Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))(w, r)
	})
	c := newClient(t, ca, newKey(t), nil)
	_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
	se := asSendError(t, err)
	if se.Class != federation.ClassRateLimited || se.RetryAfter < 100*time.Second || se.RetryAfter > 121*time.Second {
		t.Errorf("got %v, RetryAfter %v; want rate limited for about 2 min", err, se.RetryAfter)
	}
}

func TestRequestTimeout(t *testing.T) {
	ca := pki.MustCA(t)
	rv := newReceiver(t, ca, hangingHandler(nil))
	c := newClient(t, ca, newKey(t), func(o *federation.Options) { o.RequestTimeout = 300 * time.Millisecond })
	start := time.Now()
	_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
	se := asSendError(t, err)
	if se.Class != federation.ClassTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v (class %v), want ClassTimeout wrapping context.DeadlineExceeded", err, se.Class)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %v; RequestTimeout is 300ms", elapsed)
	}
}

func TestCallerCancellation(t *testing.T) {
	ca := pki.MustCA(t)
	arrived := make(chan struct{})
	rv := newReceiver(t, ca, hangingHandler(arrived))
	c := newClient(t, ca, newKey(t), nil)
	ctx, cancel := context.WithCancel(testContext(t))
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.SendTransaction(ctx, rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
	asSendError(t, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want it to wrap context.Canceled", err)
	}
}

func TestConnectionFailures(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)

	t.Run("untrusted certificate", func(t *testing.T) {
		rv := newReceiver(t, pki.MustCA(t), matrixError(200, `{}`)) // another CA
		c := newClient(t, ca, key, nil)
		_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
		if se := asSendError(t, err); se.Class != federation.ClassTLS {
			t.Errorf("got %v (class %v), want ClassTLS", err, se.Class)
		}
	})
	t.Run("certificate for another name", func(t *testing.T) {
		rv := newReceiver(t, ca, matrixError(200, `{}`), "other.test", "10.9.9.9")
		c := newClient(t, ca, key, nil)
		_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
		if se := asSendError(t, err); se.Class != federation.ClassTLS {
			t.Errorf("got %v (class %v), want ClassTLS", err, se.Class)
		}
	})
	t.Run("InsecureSkipVerify accepts it", func(t *testing.T) {
		rv := newReceiver(t, pki.MustCA(t), matrixError(200, `{}`))
		c := newClient(t, ca, key, func(o *federation.Options) { o.InsecureSkipVerify = true })
		if _, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical)); err != nil {
			t.Errorf("SendTransaction: %v", err)
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		ln := listenPlain(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
		c := newClient(t, ca, key, nil)
		_, err := c.SendTransaction(testContext(t), ln, "t1", []byte(txnBody), []byte(txnCanonical))
		if se := asSendError(t, err); se.Class != federation.ClassTLS {
			t.Errorf("got %v (class %v), want ClassTLS", err, se.Class)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dest := ln.Addr().String()
		ln.Close()
		c := newClient(t, ca, key, nil)
		_, err = c.SendTransaction(testContext(t), dest, "t1", []byte(txnBody), []byte(txnCanonical))
		se := asSendError(t, err)
		if se.Class != federation.ClassNetwork || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("got %v (class %v), want ClassNetwork wrapping ECONNREFUSED", err, se.Class)
		}
	})
	t.Run("denied address", func(t *testing.T) {
		rv := newReceiver(t, ca, matrixError(200, `{}`))
		c := newClient(t, ca, key, func(o *federation.Options) { o.Guard = nil }) // default denylist
		_, err := c.SendTransaction(testContext(t), rv.dest, "t1", []byte(txnBody), []byte(txnCanonical))
		se := asSendError(t, err)
		if se.Class != federation.ClassNetwork || !errors.Is(err, netguard.ErrDenied) {
			t.Errorf("got %v (class %v), want ClassNetwork wrapping netguard.ErrDenied", err, se.Class)
		}
		if n := rv.conns.Load(); n != 0 {
			t.Errorf("receiver on a denied address accepted %d connections", n)
		}
	})
	t.Run("unresolvable", func(t *testing.T) {
		dns := resolvetest.NewDNS(t)
		c := newClient(t, ca, key, func(o *federation.Options) {
			o.Resolver = resolve.New(resolve.Options{Resolver: dns.Resolver()})
		})
		_, err := c.SendTransaction(testContext(t), "nowhere.test:8448", "t1", []byte(txnBody), []byte(txnCanonical))
		se := asSendError(t, err)
		if se.Class != federation.ClassNetwork || !errors.Is(err, resolve.ErrNoAddresses) {
			t.Errorf("got %v (class %v), want ClassNetwork wrapping resolve.ErrNoAddresses", err, se.Class)
		}
	})
}

func TestInvalidRequests(t *testing.T) {
	ca := pki.MustCA(t)
	c := newClient(t, ca, newKey(t), nil)
	tests := []struct {
		dest, txn string
		want      error
	}{
		{"bad name!", "t1", servername.ErrInvalid},
		{"127.0.0.1:1", "a/b", federation.ErrInvalidTxnID},
		{"127.0.0.1:1", "", federation.ErrInvalidTxnID},
		{"127.0.0.1:1", "t?x=1", federation.ErrInvalidTxnID},
	}
	for _, tt := range tests {
		_, err := c.SendTransaction(testContext(t), tt.dest, tt.txn, []byte(txnBody), []byte(txnCanonical))
		se := asSendError(t, err)
		if se.Class != federation.ClassRejected || !errors.Is(err, tt.want) {
			t.Errorf("SendTransaction(%q, %q) = %v, want ClassRejected wrapping %v", tt.dest, tt.txn, err, tt.want)
		}
	}
	c.Close()
	_, err := c.SendTransaction(testContext(t), "127.0.0.1:1", "t1", []byte(txnBody), []byte(txnCanonical))
	if !errors.Is(err, federation.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestKeepAlive(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)
	a := newReceiver(t, ca, matrixError(200, `{"pdus": {}}`))
	b := newReceiver(t, ca, matrixError(500, `{"errcode": "M_UNKNOWN"}`))
	c := newClient(t, ca, key, nil)
	for i := 0; i < 5; i++ {
		txn := fmt.Sprintf("t%d", i)
		if _, err := c.SendTransaction(testContext(t), a.dest, txn, []byte(txnBody), []byte(txnCanonical)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if _, err := c.SendTransaction(testContext(t), b.dest, txn, []byte(txnBody), []byte(txnCanonical)); err == nil {
			t.Fatalf("send %d to b succeeded", i)
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("a accepted %d connections for 5 sequential sends, want 1", n)
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("b accepted %d connections for 5 sequential error answers, want 1", n)
	}
}

// TestHostnameDestination resolves through DNS and .well-known: the
// certificate is checked against the delegated hostname (SNI), Host carries
// it, and a black-holed first SRV candidate is skipped for the next.
func TestHostnameDestination(t *testing.T) {
	ca := pki.MustCA(t)
	key := newKey(t)
	dns := resolvetest.NewDNS(t)
	h, requests := recordingHandler(key, matrixError(200, `{"pdus": {}}`))
	rv := newReceiver(t, ca, h, "fed.test", "srv.test")
	wk := newReceiver(t, ca, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"m.server": "fed.test:%s"}`, rv.port)
	}, "delegating.test")
	dns.Add(t,
		"delegating.test. 60 IN A 127.0.0.1",
		"fed.test. 60 IN A 127.0.0.1",
		"_matrix-fed._tcp.srv.test. 60 IN SRV 10 0 "+rv.port+" refused.test.",
		"_matrix-fed._tcp.srv.test. 60 IN SRV 20 0 "+rv.port+" ok.test.",
		"refused.test. 60 IN A 127.0.0.2", // nothing listens there
		"ok.test. 60 IN A 127.0.0.1",
	)
	_, wkPort, _ := net.SplitHostPort(wk.dest)
	var port int
	fmt.Sscan(wkPort, &port)
	res := resolve.New(resolve.Options{
		Resolver: dns.Resolver(),
		HTTPClient: federation.NewWellKnownClient(federation.WellKnownClientOptions{
			Guard: loopbackGuard(), RootCAs: ca.Pool, Resolver: dns.Resolver(),
		}),
		WellKnownPort: port,
	})
	c := newClient(t, ca, key, func(o *federation.Options) { o.Resolver = res })

	tests := []struct{ dest, host, sni string }{
		{"delegating.test", "fed.test:" + rv.port, "fed.test"},
		{"fed.test:" + rv.port, "fed.test:" + rv.port, "fed.test"},
		{"srv.test", "srv.test", "srv.test"},
	}
	for i, tt := range tests {
		if _, err := c.SendTransaction(testContext(t), tt.dest, "t1", []byte(txnBody), []byte(txnCanonical)); err != nil {
			t.Fatalf("send to %s: %v", tt.dest, err)
		}
		got := requests()
		if len(got) != i+1 {
			t.Fatalf("receiver saw %d requests, want %d", len(got), i+1)
		}
		r := got[i]
		if r.host != tt.host || r.sni != tt.sni || r.authErr != nil || r.auth.Destination != tt.dest {
			t.Errorf("send to %s: Host %q SNI %q auth %+v (%v); want Host %q SNI %q destination %q",
				tt.dest, r.host, r.sni, r.auth, r.authErr, tt.host, tt.sni, tt.dest)
		}
	}
}

func TestWellKnownClientIsGuarded(t *testing.T) {
	ca := pki.MustCA(t)
	rv := newReceiver(t, ca, matrixError(200, `{"m.server": "x.test"}`))
	client := federation.NewWellKnownClient(federation.WellKnownClientOptions{RootCAs: ca.Pool})
	resp, err := client.Get("https://" + rv.dest + "/.well-known/matrix/server")
	if err == nil {
		resp.Body.Close()
		t.Fatal("the default .well-known client fetched from loopback")
	}
	if !errors.Is(err, netguard.ErrDenied) {
		t.Errorf("got %v, want netguard.ErrDenied", err)
	}
	if n := rv.conns.Load(); n != 0 {
		t.Errorf("server on loopback accepted %d connections", n)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := federation.New(federation.Options{Origin: "bad name"})
	if !errors.Is(err, federation.ErrInvalidOptions) {
		t.Fatalf("New with bad options: %v, want ErrInvalidOptions", err)
	}
	for _, want := range []string{"Origin", "Key", "Resolver"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func asSendError(t *testing.T, err error) *federation.SendError {
	t.Helper()
	var se *federation.SendError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *SendError", err, err)
	}
	return se
}

// listenPlain runs a plain TCP server answering each connection with serve.
func listenPlain(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestGateClosedSendsNothing: a transaction whose gate (a partition lease)
// closed before the request went out is not sent at all.
func TestGateClosedSendsNothing(t *testing.T) {
	ca := pki.MustCA(t)
	var requests atomic.Int32
	rv := newReceiver(t, ca, func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		io.WriteString(w, "{}")
	})
	c := newClient(t, ca, newKey(t), nil)
	open := true
	ctx := federation.WithGate(testContext(t), func() bool { return open })
	if _, err := c.SendTransaction(ctx, rv.dest, "t1", []byte(txnBody), []byte(txnCanonical)); err != nil {
		t.Fatalf("with the gate open: %v", err)
	}
	open = false
	_, err := c.SendTransaction(ctx, rv.dest, "t2", []byte(txnBody), []byte(txnCanonical))
	if !errors.Is(err, federation.ErrGateClosed) {
		t.Errorf("with the gate closed: got %v, want ErrGateClosed", err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the receiver got %d requests, want only the one sent while the gate was open", n)
	}
}
