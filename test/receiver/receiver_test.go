package receiver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
)

func TestAcceptsTransaction(t *testing.T) {
	var seen []string
	e := newEnv(t, func(o *Options) {
		o.KeepBodies = true
		o.OnPDU = func(eventID, roomID string, _ time.Time) { seen = append(seen, eventID+" "+roomID) }
		o.OnTransaction = func(tx Transaction, pdus []PDU) {
			seen = append(seen, fmt.Sprintf("txn %s %d %d", tx.TxnID, tx.PDUs, tx.EDUs))
			for _, p := range pdus {
				seen = append(seen, p.TxnID+" "+p.EventID)
			}
		}
	})
	body := txn([]string{"$a", "$b"}, 3)
	e.send("t1", body).wantPDUs(t, okAll("$a", "$b"))
	e.send("t1", body).wantPDUs(t, okAll("$a", "$b")) // a retry: answered from the cache, not seen again

	e.rcv.RequireNoViolations(t)
	if got := e.rcv.PDUs(); len(got) != 2 || got[0].EventID != "$a" || got[1].EventID != "$b" ||
		got[0].RoomID != "!room:"+origin || got[1].TxnID != "t1" || got[0].Error != "" || got[0].Received.IsZero() {
		t.Fatalf("PDUs %+v", got)
	}
	txns := e.rcv.Transactions()
	if len(txns) != 1 {
		t.Fatalf("transactions %+v", txns)
	}
	if tx := txns[0]; tx.TxnID != "t1" || tx.OriginServerTS != 1_700_000_000_000 || tx.PDUs != 2 || tx.EDUs != 3 || !bytes.Equal(tx.Body, body) {
		t.Fatalf("transaction %+v", tx)
	}
	if edus := e.rcv.EDUs(); len(edus) != 3 || edus[0].TxnID != "t1" || edus[0].Type == "" || edus[0].Content[0] != '{' {
		t.Fatalf("EDUs %+v", edus)
	}
	if e.rcv.PDUCount() != 2 || e.rcv.Requests() != 2 || e.rcv.Duplicates() != 1 || e.rcv.RedeliveredPDUs() != 0 || e.rcv.InFlight() != 0 {
		t.Fatalf("counts: PDUs %d requests %d duplicates %d redelivered %d in flight %d",
			e.rcv.PDUCount(), e.rcv.Requests(), e.rcv.Duplicates(), e.rcv.RedeliveredPDUs(), e.rcv.InFlight())
	}
	if want := []string{"$a !room:" + origin, "$b !room:" + origin, "txn t1 2 3", "t1 $a", "t1 $b"}; !slices.Equal(seen, want) {
		t.Fatalf("OnPDU and OnTransaction saw %q, want %q", seen, want)
	}
	if e.rcv.ServerName() != e.rcv.Addr() || !strings.HasPrefix(e.rcv.Addr(), "127.0.0.1:") {
		t.Fatalf("server name %q, addr %q", e.rcv.ServerName(), e.rcv.Addr())
	}
}

func TestBodiesNotKeptByDefault(t *testing.T) {
	e := newEnv(t, nil)
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	if b := e.rcv.Transactions()[0].Body; b != nil {
		t.Fatalf("body kept: %s", b)
	}
}

func TestAuthentication(t *testing.T) {
	other, err := xmatrix.GenerateKey("a_test") // same key id, different key
	if err != nil {
		t.Fatal(err)
	}
	otherVersion, err := xmatrix.GenerateKey("b_other")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       req
		status    int
		violation string
	}{
		{"bad signature", req{key: &other}, 401, "does not verify"},
		{"wrong key id", req{key: &otherVersion}, 401, `key "ed25519:b_other"`},
		{"wrong origin", req{origin: "evil.test"}, 401, `origin "evil.test"`},
		{"wrong destination", req{dest: "elsewhere.test"}, 401, `destination "elsewhere.test"`},
		{"no header", req{auth: ptr("")}, 401, "no X-Matrix"},
		{"malformed header", req{auth: ptr("X-Matrix garbage")}, 400, "malformed Authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			tt.req.txnID = "t1"
			tt.req.body = txn([]string{"$a"}, 0)
			e.do(tt.req).want(t, tt.status, "M_UNAUTHORIZED")
			e.wantViolations(1, tt.violation)
			if e.rcv.PDUCount() != 0 || len(e.rcv.Transactions()) != 0 || e.rcv.Requests() != 1 {
				t.Fatalf("recorded: %d PDUs, %d transactions, %d requests", e.rcv.PDUCount(), len(e.rcv.Transactions()), e.rcv.Requests())
			}
		})
	}
}

func TestSkipSignatureCheckStillChecksHeader(t *testing.T) {
	other, err := xmatrix.GenerateKey("a_test")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.SkipSignatureCheck = true })
	e.do(req{txnID: "t1", body: txn([]string{"$a"}, 0), key: &other}).wantPDUs(t, okAll("$a"))
	e.rcv.RequireNoViolations(t)
	e.do(req{txnID: "t2", body: txn([]string{"$b"}, 0), dest: "elsewhere.test"}).want(t, 401, "M_UNAUTHORIZED")
	e.wantViolations(1, "destination")
}

func TestBodyRules(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		status    int
		errcode   string
		violation string
	}{
		{"51 PDUs", string(txn(ids("e", 51), 0)), 400, "", "51 PDUs"},
		{"101 EDUs", string(txn(nil, 101)), 400, "", "101 EDUs"},
		{"wrong origin", `{"origin":"evil.test","origin_server_ts":1,"pdus":[]}`, 400, "M_BAD_JSON", "origin"},
		{"no origin", `{"origin_server_ts":1,"pdus":[]}`, 400, "M_BAD_JSON", "origin missing"},
		{"string ts", `{"origin":"origin.test","origin_server_ts":"1","pdus":[]}`, 400, "M_BAD_JSON", "origin_server_ts"},
		{"negative ts", `{"origin":"origin.test","origin_server_ts":-1,"pdus":[]}`, 400, "M_BAD_JSON", "origin_server_ts"},
		{"no ts", `{"origin":"origin.test","pdus":[]}`, 400, "M_BAD_JSON", "origin_server_ts missing"},
		{"no pdus", `{"origin":"origin.test","origin_server_ts":1}`, 400, "M_BAD_JSON", "no pdus"},
		{"pdus not an array", `{"origin":"origin.test","origin_server_ts":1,"pdus":{}}`, 400, "M_BAD_JSON", "pdus"},
		{"not an object", `[1,2]`, 400, "M_BAD_JSON", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			a := e.send("t1", []byte(tt.body))
			a.want(t, tt.status, tt.errcode)
			if tt.errcode == "" && string(a.body) != "{}" {
				t.Fatalf("want Synapse's 400 {}, got %s", a.body)
			}
			e.wantViolations(1, tt.violation)
			if len(e.rcv.Transactions()) != 0 {
				t.Fatal("transaction recorded")
			}
		})
	}
}

func TestNotJSON(t *testing.T) {
	e := newEnv(t, nil)
	// Synapse parses the body before it looks at the signature.
	e.do(req{txnID: "t1", body: []byte(`{"origin":`), auth: ptr(`X-Matrix origin="origin.test",destination="x",key="ed25519:a_test",sig="x"`)}).
		want(t, 400, "M_NOT_JSON")
	e.wantViolations(1, "not JSON")
}

func TestMalformedPDUsAreSkipped(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"origin":"origin.test","origin_server_ts":1,"pdus":[` +
		`{"event_id":"$ok","room_id":"!r:origin.test"},` +
		`{"event_id":"$noroom"},` +
		`{"event_id":"nosigil","room_id":"!r:origin.test"},` +
		`{"event_id":42,"room_id":"!r:origin.test"},` +
		`"not an object"],` +
		`"edus":[{"edu_type":"m.typing","content":{}},{"content":{}},{"edu_type":"m.x","content":[]}]}`
	e.send("t1", []byte(body)).wantPDUs(t, okAll("$ok"))
	v := e.rcv.Violations()
	for _, sub := range []string{"room_id", "event_id \"nosigil\"", "PDU 3", "PDU 4", "EDU 1", "EDU 2"} {
		if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, sub) }) {
			t.Errorf("no violation mentions %q: %q", sub, v)
		}
	}
	if len(v) != 6 {
		t.Errorf("want 6 violations, got %q", v)
	}
	if tx := e.rcv.Transactions(); len(tx) != 1 || tx[0].PDUs != 5 || tx[0].EDUs != 3 || e.rcv.PDUCount() != 1 {
		t.Fatalf("transactions %+v, %d PDUs", tx, e.rcv.PDUCount())
	}
}

func TestTxnIDs(t *testing.T) {
	e := newEnv(t, nil)
	// '.' and '~' are in the spec's Opaque Identifier Grammar.
	e.send("a.b~c_d-E9", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	e.rcv.RequireNoViolations(t)

	// Synapse serves any txnId; we flag the odd ones.
	e.send("a%2Bb", txn([]string{"$b"}, 0)).wantPDUs(t, okAll("$b"))
	e.wantViolations(1, `"a+b"`)

	e2 := newEnv(t, nil)
	e2.send("", txn([]string{"$c"}, 0)).want(t, 500, "M_UNKNOWN")
	e2.wantViolations(1, "empty txnId")

	e3 := newEnv(t, nil)
	e3.send("t1/", txn([]string{"$d"}, 0)).wantPDUs(t, okAll("$d"))
	e3.wantViolations(1, "trailing slash")
	e3.send("t1/x", txn([]string{"$d"}, 0)).want(t, 404, "M_UNRECOGNIZED")
	if v := e3.rcv.Violations(); len(v) != 2 || !strings.Contains(v[1], "cannot contain /") {
		t.Fatalf("violations %q", v)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, nil)
	e.do(req{method: http.MethodGet, txnID: "t1"}).want(t, 405, "M_UNRECOGNIZED")
	e.wantViolations(1, "only PUT")
	e.do(req{method: http.MethodGet, path: "/_matrix/federation/v1/version"}).want(t, 404, "M_UNRECOGNIZED")
	if v := e.rcv.Violations(); len(v) != 2 || !strings.Contains(v[1], "/_matrix/federation/v1/version") {
		t.Fatalf("violations %q", v)
	}

	wk := newEnv(t, func(o *Options) {
		o.Fallback = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"m.server":"x:1"}`)) })
	})
	a := wk.do(req{method: http.MethodGet, path: "/.well-known/matrix/server"})
	if a.status != 200 || string(a.body) != `{"m.server":"x:1"}` {
		t.Fatalf("fallback answered %d %s", a.status, a.body)
	}
	wk.rcv.RequireNoViolations(t)
}

func TestExpectHost(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.ExpectHost = "dest.test" })
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	e.wantViolations(1, `Host header "127.0.0.1:`)
}

func TestConcurrentTransactions(t *testing.T) {
	e := newEnv(t, nil)
	bodyA := txn([]string{"$a"}, 0)
	e.rcv.SetFault(Fault{Hang: true, Times: 1})
	first := e.async(req{txnID: "A", body: bodyA})
	e.rcv.WaitFor(t, "A in flight", func() bool { return e.rcv.InFlight() == 1 })

	a := e.send("B", txn([]string{"$b"}, 0))
	a.want(t, 429, "M_UNKNOWN")
	if a.errMessage != "Too many concurrent transactions" {
		t.Fatalf("429 says %q", a.errMessage)
	}
	e.wantViolations(1, "txn B sent while txn A is still in flight")

	// A retry of A joins the one in flight, as Synapse's ResponseCache does.
	retry := e.async(req{txnID: "A", body: bodyA})
	e.rcv.WaitFor(t, "the retry of A", func() bool { return e.rcv.Requests() == 3 })
	select {
	case got := <-retry:
		t.Fatalf("retry answered while A hangs: %+v", got)
	default:
	}

	e.rcv.SetFault(Fault{}) // releases A, which is then processed
	e.await(first, "A").wantPDUs(t, okAll("$a"))
	e.await(retry, "retry of A").wantPDUs(t, okAll("$a"))
	if e.rcv.PDUCount() != 1 || e.rcv.Duplicates() != 1 || e.rcv.InFlight() != 0 {
		t.Fatalf("%d PDUs, %d duplicates, %d in flight", e.rcv.PDUCount(), e.rcv.Duplicates(), e.rcv.InFlight())
	}
	e.send("B", txn([]string{"$b"}, 0)).wantPDUs(t, okAll("$b"))
	if len(e.rcv.Violations()) != 1 {
		t.Fatalf("violations %q", e.rcv.Violations())
	}
}

func TestTxnIDReuse(t *testing.T) {
	e := newEnv(t, nil)
	body := txn([]string{"$a", "$b"}, 0)
	e.rcv.SetFault(Fault{PDUErrors: map[string]string{"$b": "no"}})
	first := e.send("t1", body)
	e.rcv.SetFault(Fault{})
	want := map[string]map[string]string{"$a": {}, "$b": {"error": "no"}}
	first.wantPDUs(t, want)

	again := e.send("t1", body)
	again.wantPDUs(t, want) // the cached answer, errors included
	if !bytes.Equal(first.body, again.body) {
		t.Fatalf("cached answer %s differs from %s", again.body, first.body)
	}
	e.rcv.RequireNoViolations(t)
	if e.rcv.Duplicates() != 1 || e.rcv.PDUCount() != 2 || len(e.rcv.Transactions()) != 1 || e.rcv.RedeliveredPDUs() != 0 {
		t.Fatalf("%d duplicates, %d PDUs, %d transactions, %d redelivered",
			e.rcv.Duplicates(), e.rcv.PDUCount(), len(e.rcv.Transactions()), e.rcv.RedeliveredPDUs())
	}

	e.send("t1", txn([]string{"$c"}, 0)).wantPDUs(t, want) // Synapse answers from its cache
	e.wantViolations(1, "txn t1 reused with a different body")
	if e.rcv.Duplicates() != 2 || e.rcv.PDUCount() != 2 {
		t.Fatalf("%d duplicates, %d PDUs", e.rcv.Duplicates(), e.rcv.PDUCount())
	}
}

func TestRedelivery(t *testing.T) {
	e := newEnv(t, nil)
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	e.send("t2", txn([]string{"$a", "$b"}, 0)).wantPDUs(t, okAll("$a", "$b"))
	e.rcv.RequireNoViolations(t) // at-least-once delivery
	if e.rcv.RedeliveredPDUs() != 1 || e.rcv.PDUCount() != 3 {
		t.Fatalf("%d redelivered, %d PDUs", e.rcv.RedeliveredPDUs(), e.rcv.PDUCount())
	}
	if p := e.rcv.PDUs(); p[1].EventID != "$a" || p[1].TxnID != "t2" {
		t.Fatalf("PDUs %+v", p)
	}

	// A per-PDU error is final: sending the event again is a sender bug.
	e.rcv.SetFault(Fault{PDUErrors: map[string]string{"$c": "forbidden"}})
	e.send("t3", txn([]string{"$c"}, 0)).wantPDUs(t, map[string]map[string]string{"$c": {"error": "forbidden"}})
	e.rcv.SetFault(Fault{})
	if p := e.rcv.PDUs(); p[3].Error != "forbidden" {
		t.Fatalf("PDU %+v has no error", p[3])
	}
	e.send("t4", txn([]string{"$c"}, 0)).wantPDUs(t, okAll("$c"))
	e.wantViolations(1, "event $c delivered again after the receiver answered it with an error")
}

func TestFaultStatus(t *testing.T) {
	tests := []struct {
		fault   Fault
		errcode string
	}{
		{Fault{Status: 500}, "M_UNKNOWN"},
		{Fault{Status: 502, Body: "<html>Bad Gateway</html>"}, ""},
		{Fault{Status: 503, RetryAfter: "2"}, "M_UNKNOWN"},
		{Fault{Status: 429, RetryAfter: "3", RetryAfterMS: 1500}, "M_LIMIT_EXCEEDED"},
		{Fault{Status: 401}, "M_UNAUTHORIZED"},
		{Fault{Status: 403}, "M_FORBIDDEN"},
		{Fault{Status: 400}, "M_BAD_JSON"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.fault.Status), func(t *testing.T) {
			e := newEnv(t, nil)
			e.rcv.SetFault(tt.fault)
			for i := range 2 {
				a := e.send("t1", txn([]string{"$a"}, 0))
				a.want(t, tt.fault.Status, tt.errcode)
				if got := a.header.Get("Retry-After"); got != tt.fault.RetryAfter {
					t.Fatalf("Retry-After %q, want %q", got, tt.fault.RetryAfter)
				}
				if tt.fault.Body != "" && (string(a.body) != tt.fault.Body || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html")) {
					t.Fatalf("body %q (%s)", a.body, a.header.Get("Content-Type"))
				}
				if tt.fault.RetryAfterMS != 0 && !bytes.Contains(a.body, []byte(`"retry_after_ms":1500`)) {
					t.Fatalf("body %s has no retry_after_ms", a.body)
				}
				if e.rcv.Requests() != i+1 {
					t.Fatalf("%d requests seen, want %d", e.rcv.Requests(), i+1)
				}
			}
			e.rcv.SetFault(Fault{})
			e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
			if e.rcv.Duplicates() != 0 || e.rcv.PDUCount() != 1 {
				t.Fatalf("a faulted transaction was recorded: %d duplicates, %d PDUs", e.rcv.Duplicates(), e.rcv.PDUCount())
			}
			e.rcv.RequireNoViolations(t)
		})
	}
}

func TestFaultTimes(t *testing.T) {
	e := newEnv(t, nil)
	e.rcv.SetFault(Fault{Status: 503, Times: 2})
	e.send("t1", txn([]string{"$a"}, 0)).want(t, 503, "M_UNKNOWN")
	e.send("t1", txn([]string{"$a"}, 0)).want(t, 503, "M_UNKNOWN")
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	e.send("t2", txn([]string{"$b"}, 0)).wantPDUs(t, okAll("$b"))
	// Protocol breaches are answered as such and do not use up a fault.
	e.rcv.SetFault(Fault{Status: 500, Times: 1})
	e.send("t3", txn(ids("x", 51), 0)).want(t, 400, "")
	e.send("t3", txn([]string{"$c"}, 0)).want(t, 500, "M_UNKNOWN")
	e.send("t3", txn([]string{"$c"}, 0)).wantPDUs(t, okAll("$c"))
	e.wantViolations(1, "51 PDUs")
}

func TestHangCutOffByClientTimeout(t *testing.T) {
	e := newEnv(t, nil)
	e.rcv.SetFault(Fault{Hang: true})
	a := e.do(req{txnID: "t1", body: txn([]string{"$a"}, 0), client: e.newClient(300 * time.Millisecond), noVerify: true})
	var timeout interface{ Timeout() bool }
	if !errors.As(a.err, &timeout) || !timeout.Timeout() {
		t.Fatalf("want a client timeout, got %+v", a)
	}
	if e.rcv.InFlight() != 1 || e.rcv.PDUCount() != 0 {
		t.Fatalf("%d in flight, %d PDUs", e.rcv.InFlight(), e.rcv.PDUCount())
	}
	closeWithin(t, e.rcv)
	if e.rcv.PDUCount() != 0 || e.rcv.InFlight() != 0 {
		t.Fatalf("after Close: %d PDUs, %d in flight", e.rcv.PDUCount(), e.rcv.InFlight())
	}
	if err := e.rcv.Restart(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Restart after Close: %v", err)
	}
}

func TestStopRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))

	e.rcv.SetFault(Fault{Hang: true})
	hung := e.async(req{txnID: "t2", body: txn([]string{"$b"}, 0)})
	e.rcv.WaitFor(t, "t2 in flight", func() bool { return e.rcv.InFlight() == 1 })
	e.rcv.Stop()
	if a := e.await(hung, "hung t2"); a.err == nil {
		t.Fatalf("hung request answered %d %s by a stopped server", a.status, a.body)
	}
	e.rcv.Stop() // idempotent

	a := e.do(req{txnID: "t2", body: txn([]string{"$b"}, 0), noVerify: true})
	if !errors.Is(a.err, syscall.ECONNREFUSED) {
		t.Fatalf("want connection refused, got %+v", a)
	}

	e.rcv.SetFault(Fault{})
	if err := e.rcv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := e.rcv.Restart(); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Restart: %v", err)
	}
	// The cut-off t2 was not recorded: it is processed afresh.
	e.send("t2", txn([]string{"$b"}, 0)).wantPDUs(t, okAll("$b"))
	// The txnId cache survives the restart.
	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	if e.rcv.Duplicates() != 1 || e.rcv.PDUCount() != 2 {
		t.Fatalf("%d duplicates, %d PDUs", e.rcv.Duplicates(), e.rcv.PDUCount())
	}
	e.rcv.RequireNoViolations(t)
}

func TestBadCert(t *testing.T) {
	e := newEnv(t, nil)
	e.rcv.UseBadCert(true)
	a := e.do(req{txnID: "t1", body: txn([]string{"$a"}, 0), client: e.newClient(WaitTimeout), noVerify: true})
	if _, ok := errors.AsType[*tls.CertificateVerificationError](a.err); !ok {
		t.Fatalf("want a certificate verification error, got %+v", a)
	}
	e.rcv.UseBadCert(false)
	e.do(req{txnID: "t1", body: txn([]string{"$a"}, 0), client: e.newClient(WaitTimeout)}).wantPDUs(t, okAll("$a"))
	if e.rcv.Requests() != 1 {
		t.Fatalf("%d requests seen, want 1 (the TLS failure never reached HTTP)", e.rcv.Requests())
	}

	// A certificate from the trusted CA but for another name is refused too.
	ca := pki.MustCA(t)
	wrongName := newEnvWithCA(t, ca, func(o *Options) { o.BadCert = ca.MustLeaf(t, "other.test") })
	wrongName.rcv.UseBadCert(true)
	a = wrongName.do(req{txnID: "t1", body: txn([]string{"$a"}, 0), noVerify: true})
	var hostErr x509.HostnameError
	if !errors.As(a.err, &hostErr) {
		t.Fatalf("want a hostname error for the wrong name, got %+v", a)
	}
}

func TestOptionsValidate(t *testing.T) {
	_, err := New(Options{OriginKeyID: "rsa:1"})
	if err == nil {
		t.Fatal("New accepted empty options")
	}
	for _, want := range []string{"Origin", "OriginKey", "OriginKeyID", "Cert"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := e.rcv.Wait(ctx, func() bool { return false }); err == nil {
		t.Fatal("Wait returned nil for a condition that never holds")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	e := newEnv(t, nil)
	e.send("t0", txn([]string{"$z"}, 0)).wantPDUs(t, okAll("$z"))
	e.rcv.SetFault(Fault{Hang: true})
	body := txn([]string{"$a"}, 0)
	hung := e.async(req{txnID: "t1", body: body})
	e.rcv.WaitFor(t, "t1 in flight", func() bool { return e.rcv.InFlight() == 1 })
	joined := e.async(req{txnID: "t1", body: body})
	e.rcv.WaitFor(t, "the retry of t1", func() bool { return e.rcv.Requests() == 3 })
	if n := receiverGoroutines(); n == 0 {
		t.Fatal("no receiver goroutines found while serving: the check below would prove nothing")
	}

	closeWithin(t, e.rcv)
	for _, ch := range []<-chan answer{hung, joined} {
		if a := e.await(ch, "a cut-off request"); a.err == nil {
			t.Fatalf("answered %d %s after Close", a.status, a.body)
		}
	}
	eventually(t, "the receiver's goroutines to end", func() bool { return receiverGoroutines() == 0 })
}

// receiverGoroutines counts goroutines running the receiver's code: its
// Serve loop and its handlers.
func receiverGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "test/receiver.(*Receiver).") {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds, failing the test after WaitTimeout.
// For conditions no receiver event signals, such as goroutines ending.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", WaitTimeout, what)
		}
		<-tick.C
	}
}

// closeWithin closes r and fails the test if Close blocks, as it would on a
// handler it cannot cut off.
func closeWithin(t *testing.T, r *Receiver) {
	t.Helper()
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(WaitTimeout):
		t.Fatal("Close blocked on a hung request")
	}
}

func TestHTTP1(t *testing.T) {
	e := newEnv(t, nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool}} // HTTP/1.1 only
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: WaitTimeout}

	e.send("t1", txn([]string{"$a"}, 0)).wantPDUs(t, okAll("$a"))
	e.rcv.SetFault(Fault{Hang: true, Times: 1})
	hung := e.async(req{txnID: "t2", body: txn([]string{"$b"}, 0)})
	e.rcv.WaitFor(t, "t2 in flight", func() bool { return e.rcv.InFlight() == 1 })
	e.send("t3", txn([]string{"$c"}, 0)).want(t, 429, "M_UNKNOWN")
	e.rcv.SetFault(Fault{})
	e.await(hung, "t2").wantPDUs(t, okAll("$b"))
	e.wantViolations(1, "txn t3 sent while txn t2 is still in flight")
}

func TestOnEDUSeesEveryEDUOfANewTransactionOnce(t *testing.T) {
	var seen []string
	e := newEnv(t, func(o *Options) {
		o.DiscardEDUs = true
		o.OnEDU = func(edu EDU) { seen = append(seen, edu.TxnID+" "+edu.Type+" "+string(edu.Content)) }
	})
	body := txn([]string{"$a"}, 2)
	e.send("t1", body).wantPDUs(t, okAll("$a"))
	e.send("t1", body).wantPDUs(t, okAll("$a")) // a retry: answered from the cache, not seen again
	e.rcv.RequireNoViolations(t)
	if want := []string{`t1 m.typing {"n":0}`, `t1 m.typing {"n":1}`}; !slices.Equal(seen, want) {
		t.Errorf("OnEDU saw %q, want %q", seen, want)
	}
	if edus := e.rcv.EDUs(); len(edus) != 0 {
		t.Errorf("DiscardEDUs: EDUs() returned %d, want none kept", len(edus))
	}
	if tx := e.rcv.Transactions(); len(tx) != 1 || tx[0].EDUs != 2 {
		t.Errorf("transactions %+v, want one of 2 EDUs", tx)
	}
}
