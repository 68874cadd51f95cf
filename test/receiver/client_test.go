package receiver

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
)

const origin = "origin.test"

// env is a receiver and a client that signs like fedsender.
type env struct {
	t      testing.TB
	ca     *pki.CA
	key    xmatrix.SigningKey
	rcv    *Receiver
	client *http.Client
}

func newEnv(t testing.TB, configure func(*Options)) *env {
	t.Helper()
	return newEnvWithCA(t, pki.MustCA(t), configure)
}

// newEnvWithCA is newEnv with the CA that issues the certificate and that
// the client trusts.
func newEnvWithCA(t testing.TB, ca *pki.CA, configure func(*Options)) *env {
	t.Helper()
	key, err := xmatrix.GenerateKey("a_test")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Origin:      origin,
		OriginKey:   key.Public(),
		OriginKeyID: key.KeyID(),
		Cert:        ca.MustLeaf(t, "127.0.0.1"),
	}
	if configure != nil {
		configure(&opts)
	}
	e := &env{t: t, ca: ca, key: key, rcv: Start(t, opts)}
	e.client = e.newClient(WaitTimeout) // a stuck request fails the test, never hangs it
	return e
}

// newClient makes a client trusting only the test CA, speaking HTTP/2 as
// Go's federation clients do, with the given overall timeout per request.
func (e *env) newClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.Pool},
		ForceAttemptHTTP2: true,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// req is one request; zero fields take the correct value.
type req struct {
	method   string
	path     string // default the send path of txnID
	txnID    string
	body     []byte
	origin   string              // signed origin
	dest     string              // signed destination
	key      *xmatrix.SigningKey // signing key
	auth     *string             // raw Authorization header instead of signing; "" sends none
	client   *http.Client
	noVerify bool // do not fail the test on a transport error
}

type answer struct {
	status     int
	header     http.Header
	body       []byte
	err        error
	errcode    string
	errMessage string
}

// do sends a request and fails the test on a transport error unless
// r.noVerify.
func (e *env) do(r req) answer {
	e.t.Helper()
	a := e.try(r)
	if a.err != nil && !r.noVerify {
		e.t.Fatalf("request failed: %v", a.err) // a.err names method and URL
	}
	return a
}

// try sends a request. It never fails the test, so it may run on another
// goroutine.
func (e *env) try(r req) answer {
	if r.method == "" {
		r.method = http.MethodPut
	}
	if r.path == "" {
		r.path = sendPrefix + r.txnID
	}
	if r.origin == "" {
		r.origin = origin
	}
	if r.dest == "" {
		r.dest = e.rcv.ServerName()
	}
	if r.key == nil {
		r.key = &e.key
	}
	if r.client == nil {
		r.client = e.client
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr, err := http.NewRequestWithContext(e.t.Context(), r.method, "https://"+e.rcv.Addr()+r.path, body)
	if err != nil {
		return answer{err: err}
	}
	switch {
	case r.auth != nil && *r.auth != "":
		hr.Header.Set("Authorization", *r.auth)
	case r.auth == nil:
		var content []byte
		if r.body != nil {
			if content, err = canonicaljson.Canonicalize(r.body); err != nil {
				return answer{err: fmt.Errorf("canonicalize test body: %w", err)}
			}
		}
		hr.Header.Set("Authorization", xmatrix.SignRequest(*r.key, r.origin, r.dest, r.method, r.path, content))
	}
	if r.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(hr)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		return answer{err: fmt.Errorf("read answer: %w", err)}
	}
	var m struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(a.body, &m) == nil {
		a.errcode, a.errMessage = m.Errcode, m.Error
	}
	return a
}

// send sends a correctly signed transaction.
func (e *env) send(txnID string, body []byte) answer {
	e.t.Helper()
	return e.do(req{txnID: txnID, body: body})
}

// txn builds a transaction body with one PDU per event id, all in room
// !room:origin.test, and n EDUs.
func txn(eventIDs []string, edus int) []byte {
	type pdu struct {
		EventID string         `json:"event_id"`
		RoomID  string         `json:"room_id"`
		Type    string         `json:"type"`
		Content map[string]any `json:"content"`
	}
	type edu struct {
		Type    string         `json:"edu_type"`
		Content map[string]any `json:"content"`
	}
	body := struct {
		Origin string `json:"origin"`
		TS     int64  `json:"origin_server_ts"`
		PDUs   []pdu  `json:"pdus"`
		EDUs   []edu  `json:"edus,omitempty"`
	}{Origin: origin, TS: 1_700_000_000_000, PDUs: []pdu{}}
	for _, id := range eventIDs {
		body.PDUs = append(body.PDUs, pdu{id, "!room:" + origin, "m.room.message", map[string]any{"body": "hi " + id}})
	}
	for i := range edus {
		body.EDUs = append(body.EDUs, edu{"m.typing", map[string]any{"n": i}})
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return b
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("$%s%d", prefix, i)
	}
	return out
}

func (a answer) want(t *testing.T, status int, errcode string) {
	t.Helper()
	if a.err != nil {
		t.Fatalf("want %d %s, got error %v", status, errcode, a.err)
	}
	if a.status != status || a.errcode != errcode {
		t.Fatalf("want %d %q, got %d %s", status, errcode, a.status, a.body)
	}
}

// wantPDUs checks a 200 answer's "pdus" map.
func (a answer) wantPDUs(t *testing.T, want map[string]map[string]string) {
	t.Helper()
	a.want(t, http.StatusOK, "")
	var got struct {
		PDUs map[string]map[string]string `json:"pdus"`
	}
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatalf("answer %s: %v", a.body, err)
	}
	if len(got.PDUs) != len(want) {
		t.Fatalf("answer %s, want pdus %v", a.body, want)
	}
	for id, res := range want {
		g, ok := got.PDUs[id]
		if !ok || len(g) != len(res) || g["error"] != res["error"] {
			t.Fatalf("answer %s, want pdus %v", a.body, want)
		}
	}
}

func okAll(eventIDs ...string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, id := range eventIDs {
		m[id] = map[string]string{}
	}
	return m
}

// wantViolations checks that there are n violations, each mentioning sub.
func (e *env) wantViolations(n int, sub string) {
	e.t.Helper()
	v := e.rcv.Violations()
	if len(v) != n {
		e.t.Fatalf("want %d violations about %q, got %d: %q", n, sub, len(v), v)
	}
	for _, msg := range v {
		if !strings.Contains(msg, sub) {
			e.t.Fatalf("violation %q does not mention %q", msg, sub)
		}
	}
}

// async runs a request in the background; the answer arrives on the channel.
func (e *env) async(r req) <-chan answer {
	ch := make(chan answer, 1)
	go func() { ch <- e.try(r) }()
	return ch
}

func (e *env) await(ch <-chan answer, what string) answer {
	e.t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(WaitTimeout):
		e.t.Fatalf("no answer to %s within %v", what, WaitTimeout)
		return answer{}
	}
}

func ptr[T any](v T) *T { return &v }
