//go:build interop

package interop

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/test/pki"
)

// front is Dendrite's federation front door: an HTTPS reverse proxy on the
// address that is Dendrite's server name, forwarding every request
// unchanged to Dendrite's own TLS listener. Dendrite answers /send with 200
// as soon as it has queued the PDUs, so its client API is what proves
// delivery; the front door counts what fedsender was told was delivered,
// which is what fedsender's offsets follow, and can hold transactions back
// so that a test kills fedsender at a known point, with a transaction in
// flight.
type front struct {
	name string // 127.0.0.1:<port>
	srv  *http.Server

	mu      sync.Mutex
	target  *url.URL
	acked   sendCounts
	edus    map[string][]json.RawMessage // the contents of the acknowledged EDUs, by edu_type
	hold    func(sendCounts) bool        // non-nil: hold /send once it holds for the counts
	held    int                          // /send requests held now
	release chan struct{}                // closed to let the held requests through
}

// sendCounts counts the PDUs and EDUs of /send transactions answered 200.
type sendCounts struct {
	Txns int
	PDUs int
	EDUs map[string]int // by edu_type
}

// startFront listens on a free port with a certificate from ca; call
// forwardTo before anything is sent through it.
func startFront(t *testing.T, ca *pki.CA) *front {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{name: l.Addr().String(), acked: sendCounts{EDUs: map[string]int{}}, edus: map[string][]json.RawMessage{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			f.mu.Lock()
			r.SetURL(f.target)
			f.mu.Unlock()
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}},
		// A request cut off by a killed fedsender is expected: answer
		// without logging.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) },
	}
	f.srv = &http.Server{
		Handler:   f.handler(proxy),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.MustLeaf(t, "127.0.0.1")}},
	}
	go func() {
		if err := f.srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front door: %v", err)
		}
	}()
	t.Cleanup(func() {
		f.releaseHeld()
		f.srv.Close()
	})
	return f
}

// forwardTo sets Dendrite's TLS listener as the front door's target.
func (f *front) forwardTo(t *testing.T, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.target = u
	f.mu.Unlock()
}

func (f *front) handler(proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
			proxy.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !f.wait(r) {
			return // the sender hung up while held: nothing reached Dendrite
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		// Counted before the answer goes out, so that the sender's next
		// transaction already finds it counted.
		proxy.ServeHTTP(&statusRecorder{ResponseWriter: w, onOK: func() { f.count(body) }}, r)
	})
}

// wait holds a /send request while the front door holds transactions, and
// reports whether it may go on (false: the sender hung up).
func (f *front) wait(r *http.Request) bool {
	f.mu.Lock()
	if f.hold == nil || !f.hold(f.acked) {
		f.mu.Unlock()
		return true
	}
	f.held++
	release := f.release
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.held--
		f.mu.Unlock()
	}()
	select {
	case <-release:
		return true
	case <-r.Context().Done():
		return false
	}
}

// holdWhen holds every /send from the moment cond holds for what Dendrite
// acknowledged, until releaseHeld.
func (f *front) holdWhen(cond func(acked sendCounts) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.release = cond, make(chan struct{})
}

// releaseHeld lets the held transactions and all later ones through.
func (f *front) releaseHeld() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold != nil {
		f.hold = nil
		close(f.release)
	}
}

// waitHeld waits until a transaction is held.
func (f *front) waitHeld(t *testing.T, within time.Duration) {
	t.Helper()
	f.waitHolding(t, within, "no transaction held", func(held int) bool { return held > 0 })
}

// waitHungUp waits until the senders of the held transactions hung up, so
// that releaseHeld lets none of them through to Dendrite.
func (f *front) waitHungUp(t *testing.T, within time.Duration) {
	t.Helper()
	f.waitHolding(t, within, "the sender of a held transaction did not hang up", func(held int) bool { return held == 0 })
}

// waitHolding polls until cond holds for the number of held transactions.
func (f *front) waitHolding(t *testing.T, within time.Duration, failure string, cond func(held int) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		f.mu.Lock()
		held := f.held
		f.mu.Unlock()
		if cond(held) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v (Dendrite acknowledged %+v)", failure, within, f.counts())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// count adds an acknowledged transaction body to the counts.
func (f *front) count(body []byte) {
	var txn struct {
		PDUs []json.RawMessage `json:"pdus"`
		EDUs []struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		} `json:"edus"`
	}
	// A body Dendrite answered 200 to is JSON; a failure to decode it shows
	// as counts that never arrive.
	if json.Unmarshal(body, &txn) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked.Txns++
	f.acked.PDUs += len(txn.PDUs)
	for _, e := range txn.EDUs {
		f.acked.EDUs[e.Type]++
		f.edus[e.Type] = append(f.edus[e.Type], e.Content)
	}
}

// acknowledged returns the contents of the EDUs of eduType that Dendrite
// acknowledged, in the order it did, those sent again included.
func (f *front) acknowledged(eduType string) []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.edus[eduType])
}

// counts returns what Dendrite acknowledged so far, counting a PDU or EDU
// sent again once more.
func (f *front) counts() sendCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.acked
	c.EDUs = maps.Clone(c.EDUs)
	return c
}

// statusRecorder calls onOK before a 200 answer goes out.
type statusRecorder struct {
	http.ResponseWriter
	onOK func()
}

func (s *statusRecorder) WriteHeader(code int) {
	if code == http.StatusOK {
		s.onOK()
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
