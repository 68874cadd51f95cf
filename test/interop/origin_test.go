//go:build interop

package interop

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
)

// origin is the homeserver whose traffic fedsender sends; the test plays
// it. Its server name is the address of a small HTTPS server that answers
// Dendrite's GET /_matrix/key/v2/server with fedsender's signing key
// (fedsender serves no keys), and the test signs the origin's requests and
// events with that same key.
type origin struct {
	t       *testing.T
	name    string // 127.0.0.1:<port>
	key     xmatrix.SigningKey
	keyPath string // the key in Synapse's format, fedsender's signing_key_path
	client  *http.Client

	mu       sync.Mutex
	requests []string                // every request but the key request, as "METHOD /uri"
	devices  map[string]*userDevices // by user: what /user/devices answers
}

// userDevices is a user's device list as GET /user/devices answers it.
type userDevices struct {
	UserID   string            `json:"user_id"`
	StreamID int64             `json:"stream_id"`
	Devices  []json.RawMessage `json:"devices"`
}

// startOrigin serves the origin's keys on a free port, with a certificate
// from ca (Dendrite does not verify it: disable_tls_validation).
func startOrigin(t *testing.T, ca *pki.CA) *origin {
	t.Helper()
	key, err := xmatrix.GenerateKey("interop")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{
		t:       t,
		name:    l.Addr().String(),
		key:     key,
		keyPath: filepath.Join(t.TempDir(), "signing.key"),
		devices: map[string]*userDevices{},
		client: &http.Client{Timeout: time.Minute,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}},
	}
	writeFile(t, o.keyPath, key.MarshalKeyFile())
	srv := &http.Server{
		Handler:   http.HandlerFunc(o.serveHTTP),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.MustLeaf(t, "127.0.0.1")}},
	}
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("origin key server: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return o
}

// serveHTTP answers the key request; every other request is recorded.
// Dendrite sends its own users' traffic to the origin, which accepts it,
// and asks for the device list of a user it hears of for the first time,
// which the origin gives; anything else (Dendrite asking for events it is
// missing) is answered M_UNRECOGNIZED, as a homeserver without them would.
func (o *origin) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if strings.HasPrefix(r.URL.Path, "/_matrix/key/v2/server") {
		body, err := xmatrix.ServerKeys(o.name, o.key, time.Now().Add(24*time.Hour))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(body)
		return
	}
	o.mu.Lock()
	o.requests = append(o.requests, r.Method+" "+r.URL.RequestURI())
	o.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
		w.Write([]byte(`{"pdus":{}}`))
		return
	}
	if user, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/user/devices/"); ok {
		o.mu.Lock()
		list := o.devices[user]
		body, err := json.Marshal(list)
		o.mu.Unlock()
		if list != nil && err == nil {
			w.Write(body)
			return
		}
	}
	w.WriteHeader(http.StatusNotFound)
	w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"the test origin serves keys only"}`))
}

// requestsTo returns the requests Dendrite made to the origin whose path
// starts with prefix.
func (o *origin) requestsTo(prefix string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, r := range o.requests {
		if strings.HasPrefix(strings.SplitN(r, " ", 2)[1], prefix) {
			out = append(out, r)
		}
	}
	return out
}

// federation makes a request signed by the origin to dest, with body (nil
// for none) as JSON, and decodes a 200 answer into out.
func (o *origin) federation(method, dest, uri string, body, out any) {
	o.t.Helper()
	var content []byte
	if body != nil {
		raw, err := json.Marshal(body)
		if err == nil {
			content, err = canonicaljson.Canonicalize(raw)
		}
		if err != nil {
			o.t.Fatalf("%s %s: body: %v", method, uri, err)
		}
	}
	req, err := http.NewRequest(method, "https://"+dest+uri, bytes.NewReader(content))
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Authorization", xmatrix.SignRequest(o.key, o.name, dest, method, req.URL.RequestURI(), content))
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := o.client.Do(req)
	if err != nil {
		o.t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatalf("%s %s: %v", method, uri, err)
	}
	if resp.StatusCode != http.StatusOK {
		o.t.Fatalf("%s %s: %s: %s", method, uri, resp.Status, answer)
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			o.t.Fatalf("%s %s: %v in %s", method, uri, err, answer)
		}
	}
}

// userID is the Matrix ID of the origin's user localpart.
func (o *origin) userID(localpart string) string {
	return fmt.Sprintf("@%s:%s", localpart, o.name)
}
