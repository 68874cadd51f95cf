package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

const (
	base  = "/_synapse/admin/v1/federation/destinations"
	token = "s3cret-admin-token"
)

// fakeReader is a read model made of a slice.
type fakeReader struct {
	states   []destination.State
	notReady bool
}

func (f *fakeReader) Get(name string) (destination.State, bool) {
	for _, s := range f.states {
		if s.Destination == name {
			return s, true
		}
	}
	return destination.State{}, false
}

func (f *fakeReader) Page(q projection.Query) projection.Page {
	return projection.Select(slices.Clone(f.states), q)
}
func (f *fakeReader) Ready() bool                { return !f.notReady }
func (f *fakeReader) Sync(context.Context) error { return nil }

// EventSeq shows every destination as of fakeResetter's resets.
func (f *fakeReader) EventSeq(_ context.Context, name string) (uint64, error) {
	if _, ok := f.Get(name); !ok {
		return 0, nil
	}
	return fakeResetSeq, nil
}

// fakeResetter records the resets handed to it, and answers each stored
// at event-log sequence fakeResetSeq, which every read model of these tests
// shows for every destination it has.
type fakeResetter struct {
	mu    sync.Mutex
	calls []string
	err   error
	seq   uint64 // the sequence answered instead of fakeResetSeq, if not 0
}

const fakeResetSeq = 1

func (f *fakeResetter) Reset(ctx context.Context, dest string) (uint64, error) {
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, dest)
	if f.err != nil {
		return 0, f.err
	}
	if f.seq != 0 {
		return f.seq, nil
	}
	return fakeResetSeq, nil
}

func (f *fakeResetter) resets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// fixture has ties on every column. Names sort byte-wise:
// "Upper.example" < "[::1]:8448" < "a.example" < ... < "z.example".
var fixture = []destination.State{
	{Destination: "a.example"},
	{Destination: "b.example", FailureTS: 100, RetryLastTS: 300, RetryInterval: 600_000, Offset: 50},
	{Destination: "z.example", FailureTS: 999, Offset: 70}, // retry_last_ts 0: not failing
	{Destination: "[::1]:8448", FailureTS: 50, RetryLastTS: 400, RetryInterval: 1_200_000, Offset: 10},
	{Destination: "c.example", FailureTS: 100, RetryLastTS: 200, RetryInterval: 600_000, Offset: 50},
	{Destination: "Upper.example"},
	{Destination: "d.example:8448", Offset: 70},
}

type env struct {
	h        http.Handler
	reader   *fakeReader
	resetter *fakeResetter
}

func newEnv(t *testing.T, mutate ...func(*admin.Options)) *env {
	t.Helper()
	e := &env{reader: &fakeReader{states: slices.Clone(fixture)}, resetter: &fakeResetter{}}
	opts := admin.Options{Tokens: []string{token}, Reader: e.reader, Resetter: e.resetter}
	for _, m := range mutate {
		m(&opts)
	}
	e.h = admin.New(opts)
	return e
}

// response is a recorded answer with its JSON body decoded.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// do sends a request with the admin token unless headers say otherwise.
func (e *env) do(t *testing.T, method, target string, headers ...string) response {
	t.Helper()
	return e.doBody(t, method, target, nil, headers...)
}

func (e *env) doBody(t *testing.T, method, target string, body io.Reader, headers ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if len(headers) == 0 {
		headers = []string{"Authorization", "Bearer " + token}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] != "" {
			req.Header.Add(headers[i], headers[i+1])
		}
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, target, res.raw, err)
		}
	}
	return res
}

// noAuth is the headers argument of a request without any header.
var noAuth = []string{"", ""}

func (r response) names(t *testing.T) []string {
	t.Helper()
	list, ok := r.body["destinations"].([]any)
	if !ok {
		t.Fatalf("no destinations list in %s", r.raw)
	}
	names := []string{}
	for _, d := range list {
		names = append(names, d.(map[string]any)["destination"].(string))
	}
	return names
}

func (r response) wantError(t *testing.T, status int, errcode, msg string) {
	t.Helper()
	if r.status != status || r.body["errcode"] != errcode || (msg != "" && r.body["error"] != msg) {
		t.Errorf("got %d %s, want %d {errcode: %s, error: %q}", r.status, r.raw, status, errcode, msg)
	}
}

func TestListOrder(t *testing.T) {
	e := newEnv(t)
	const (
		up = "Upper.example"
		v6 = "[::1]:8448"
		a  = "a.example"
		b  = "b.example"
		c  = "c.example"
		d  = "d.example:8448"
		z  = "z.example"
	)
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{up, v6, a, b, c, d, z}},
		{"?dir=f", []string{up, v6, a, b, c, d, z}},
		{"?dir=b", []string{z, d, c, b, a, v6, up}},
		{"?order_by=destination", []string{up, v6, a, b, c, d, z}},
		{"?order_by=destination&dir=b", []string{z, d, c, b, a, v6, up}},
		// Zeros (not failing) tie and fall back to the name, ascending in
		// both directions.
		{"?order_by=retry_last_ts", []string{up, a, d, z, c, b, v6}},
		{"?order_by=retry_last_ts&dir=f", []string{up, a, d, z, c, b, v6}},
		{"?order_by=retry_last_ts&dir=b", []string{v6, b, c, up, a, d, z}},
		{"?order_by=retry_interval", []string{up, a, d, z, b, c, v6}},
		{"?order_by=retry_interval&dir=b", []string{v6, b, c, up, a, d, z}},
		// z.example's failure_ts is not shown (it is not failing), so it
		// sorts as null.
		{"?order_by=failure_ts", []string{up, a, d, z, v6, b, c}},
		{"?order_by=failure_ts&dir=b", []string{b, c, v6, up, a, d, z}},
		{"?order_by=last_successful_stream_ordering", []string{up, a, v6, b, c, d, z}},
		{"?order_by=last_successful_stream_ordering&dir=b", []string{d, z, b, c, v6, up, a}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := e.do(t, "GET", base+tt.query)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if got := r.names(t); !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
			if r.body["total"] != float64(len(fixture)) {
				t.Errorf("total = %v, want %d", r.body["total"], len(fixture))
			}
			if _, ok := r.body["next_token"]; ok {
				t.Errorf("next_token present in a complete list: %s", r.raw)
			}
		})
	}
}

func TestListPaging(t *testing.T) {
	e := newEnv(t)
	all := []string{"Upper.example", "[::1]:8448", "a.example", "b.example", "c.example", "d.example:8448", "z.example"}
	tests := []struct {
		query string
		want  []string
		next  string // "" for absent
	}{
		{"?limit=3", all[:3], "3"},
		{"?from=3&limit=3", all[3:6], "6"},
		{"?from=6&limit=3", all[6:], ""},
		{"?from=5", all[5:], ""},
		{"?limit=6", all[:6], "6"},
		{"?limit=7", all, ""},
		{"?limit=8", all, ""},
		{"?limit=0", []string{}, "0"},
		{"?from=2&limit=0", []string{}, "2"},
		{"?from=7", []string{}, ""},
		{"?from=100&limit=5", []string{}, ""},
		{"?from=+1&limit=1", all[1:2], "2"},
		{"?limit=99999999999999999999", all, ""},
		{"?from=99999999999999999999&limit=99999999999999999999", []string{}, ""},
		{"?limit=2&limit=1", all[:2], "2"}, // the first value counts
		{"?order_by=retry_last_ts&dir=b&from=2&limit=2", []string{"c.example", "Upper.example"}, "4"},
		// Paging counts within the search: 6 names contain "example".
		{"?destination=example&from=4&limit=1", []string{"d.example:8448"}, "5"},
		{"?destination=example&from=5&limit=1", []string{"z.example"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := e.do(t, "GET", base+tt.query)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if got := r.names(t); !slices.Equal(got, tt.want) {
				t.Errorf("page = %v, want %v", got, tt.want)
			}
			next, has := r.body["next_token"]
			switch {
			case tt.next == "" && has:
				t.Errorf("next_token = %v, want none", next)
			case tt.next != "" && next != tt.next:
				t.Errorf("next_token = %v, want %q", next, tt.next)
			}
		})
	}
}

func TestListFollowsNextToken(t *testing.T) {
	e := newEnv(t)
	var got []string
	q := "?limit=2&order_by=failure_ts&dir=b"
	for range 10 {
		r := e.do(t, "GET", base+q)
		got = append(got, r.names(t)...)
		next, ok := r.body["next_token"].(string)
		if !ok {
			break
		}
		q = "?limit=2&order_by=failure_ts&dir=b&from=" + next
	}
	want := []string{"b.example", "c.example", "[::1]:8448", "Upper.example", "a.example", "d.example:8448", "z.example"}
	if !slices.Equal(got, want) {
		t.Errorf("pages = %v, want %v", got, want)
	}
}

func TestListSearch(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		search string
		want   []string
	}{
		{"EXAMPLE", []string{"Upper.example", "a.example", "b.example", "c.example", "d.example:8448", "z.example"}},
		{"upper", []string{"Upper.example"}},
		{"b.", []string{"b.example"}},
		{":8448", []string{"[::1]:8448", "d.example:8448"}},
		{"%5B%3A%3A1%5D", []string{"[::1]:8448"}},
		{"", []string{"Upper.example", "[::1]:8448", "a.example", "b.example", "c.example", "d.example:8448", "z.example"}},
		{"nomatch", []string{}},
		{"_", []string{}}, // not a LIKE wildcard here
	}
	for _, tt := range tests {
		t.Run(tt.search, func(t *testing.T) {
			r := e.do(t, "GET", base+"?destination="+tt.search)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if got := r.names(t); !slices.Equal(got, tt.want) {
				t.Errorf("found %v, want %v", got, tt.want)
			}
			if r.body["total"] != float64(len(tt.want)) {
				t.Errorf("total = %v, want %d", r.body["total"], len(tt.want))
			}
		})
	}
	// An empty result is an empty list, not null.
	if r := e.do(t, "GET", base+"?destination=nomatch"); !strings.Contains(r.raw, `"destinations":[]`) {
		t.Errorf("empty search answered %s, want \"destinations\":[]", r.raw)
	}
}

func TestListBadParams(t *testing.T) {
	e := newEnv(t)
	const orderMsg = "Query parameter 'order_by' must be one of ['destination', 'retry_last_ts', " +
		"'retry_interval', 'failure_ts', 'last_successful_stream_ordering']"
	tests := []struct {
		query   string
		status  int
		errcode string
		msg     string
	}{
		{"?from=-5", 400, "M_INVALID_PARAM", "Query parameter from must be a positive integer."},
		{"?limit=-5", 400, "M_INVALID_PARAM", "Query parameter limit must be a positive integer."},
		{"?from=abc", 400, "M_INVALID_PARAM", "Query parameter from must be an integer"},
		{"?limit=1.5", 400, "M_INVALID_PARAM", "Query parameter limit must be an integer"},
		{"?limit=", 400, "M_INVALID_PARAM", "Query parameter limit must be an integer"},
		{"?from=0x10", 400, "M_INVALID_PARAM", "Query parameter from must be an integer"},
		{"?from=-99999999999999999999", 400, "M_INVALID_PARAM", "Query parameter from must be a positive integer."},
		{"?order_by=bar", 400, "M_INVALID_PARAM", orderMsg},
		{"?order_by=", 400, "M_INVALID_PARAM", orderMsg},
		{"?order_by=DESTINATION", 400, "M_INVALID_PARAM", orderMsg},
		{"?dir=bar", 400, "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']"},
		{"?dir=B", 400, "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']"},
		{"?destination=%C3%A9", 400, "M_UNKNOWN", "Query parameter 'destination' must be ascii"},
		// Synapse reads from, limit, destination, order_by, dir in turn.
		{"?dir=x&order_by=y&limit=-1&from=z", 400, "M_INVALID_PARAM", "Query parameter from must be an integer"},
		{"?dir=x&order_by=y", 400, "M_INVALID_PARAM", orderMsg},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e.do(t, "GET", base+tt.query).wantError(t, tt.status, tt.errcode, tt.msg)
		})
	}
}

func TestDetails(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		path string
		want string // exact JSON
	}{
		{"/b.example", `{"destination":"b.example","retry_last_ts":300,"retry_interval":600000,"failure_ts":100,"last_successful_stream_ordering":50}`},
		{"/a.example", `{"destination":"a.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null}`},
		// Not failing: failure_ts is null even if the state kept one.
		{"/z.example", `{"destination":"z.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70}`},
		{"/d.example:8448", `{"destination":"d.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70}`},
		{"/d.example%3A8448", `{"destination":"d.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70}`},
		{"/d.example%3a8448", `{"destination":"d.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70}`},
		{"/%5B%3A%3A1%5D%3A8448", `{"destination":"[::1]:8448","retry_last_ts":400,"retry_interval":1200000,"failure_ts":50,"last_successful_stream_ordering":10}`},
		{"/[::1]:8448", `{"destination":"[::1]:8448","retry_last_ts":400,"retry_interval":1200000,"failure_ts":50,"last_successful_stream_ordering":10}`},
		{"/%55pper.example", `{"destination":"Upper.example","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null}`},
		// fedsender stores names lower-cased (servername.Normalize), so
		// another spelling finds the stored one, which the answer names; a
		// name stored as given (from an older version) is found as given.
		{"/B.EXAMPLE", `{"destination":"b.example","retry_last_ts":300,"retry_interval":600000,"failure_ts":100,"last_successful_stream_ordering":50}`},
		{"/D.Example:8448", `{"destination":"d.example:8448","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":70}`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := e.do(t, "GET", base+tt.path)
			if r.status != http.StatusOK || r.raw != tt.want {
				t.Errorf("got %d %s\nwant 200 %s", r.status, r.raw, tt.want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
	// In the list, the same objects.
	r := e.do(t, "GET", base+"?destination=z.example")
	if !strings.Contains(r.raw, tests[2].want) {
		t.Errorf("list shows %s, want it to contain %s", r.raw, tests[2].want)
	}
}

// TestUnknownDestinations: Synapse answers 404 for every name it does not
// have, valid or not; an invalid name is never known.
func TestUnknownDestinations(t *testing.T) {
	e := newEnv(t)
	names := []string{
		"nope.example",
		"d.example%3A1",  // another port
		"bad%20name",     // invalid: space
		"a%2Fb",          // a '/' inside one segment
		"",               // /destinations/
		"%5B%3A%3A1%5D0", // invalid: junk after an IPv6 literal
	}
	for _, n := range names {
		for _, tc := range []struct{ method, suffix string }{{"GET", ""}, {"GET", "/rooms"}, {"POST", "/reset_connection"}} {
			if n == "" && tc.suffix == "/reset_connection" {
				continue // not a route in Synapse; see TestRouting
			}
			t.Run(tc.method+" "+n+tc.suffix, func(t *testing.T) {
				e.do(t, tc.method, base+"/"+n+tc.suffix).wantError(t, 404, "M_NOT_FOUND", "Unknown destination")
			})
		}
	}
	if got := e.resetter.resets(); len(got) != 0 {
		t.Errorf("resets handed over for unknown destinations: %v", got)
	}
}

func TestRooms(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", base+"/b.example/rooms")
	if r.status != 200 || r.raw != `{"rooms":[],"total":0}` {
		t.Errorf("got %d %s, want 200 {\"rooms\":[],\"total\":0}", r.status, r.raw)
	}
	r = e.do(t, "GET", base+"/d.example%3A8448/rooms?from=0&limit=10&dir=b")
	if r.status != 200 || r.raw != `{"rooms":[],"total":0}` {
		t.Errorf("got %d %s, want 200 {\"rooms\":[],\"total\":0}", r.status, r.raw)
	}
	e.do(t, "GET", base+"/b.example/rooms?limit=-5").wantError(t, 400, "M_INVALID_PARAM", "Query parameter limit must be a positive integer.")
	e.do(t, "GET", base+"/b.example/rooms?from=-5").wantError(t, 400, "M_INVALID_PARAM", "Query parameter from must be a positive integer.")
	e.do(t, "GET", base+"/b.example/rooms?dir=bar").wantError(t, 400, "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']")
	// The destination is checked before the parameters.
	e.do(t, "GET", base+"/nope.example/rooms?limit=-5").wantError(t, 404, "M_NOT_FOUND", "Unknown destination")
}

func TestReset(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		body       string
		ctype      string
		resetErr   error
		resetSeq   uint64
		status     int
		errcode    string
		msg        string
		wantResets []string
	}{
		{name: "failing", path: "/b.example", status: 200, wantResets: []string{"b.example"}},
		{name: "body {}", path: "/b.example", body: "{}", ctype: "application/json", status: 200, wantResets: []string{"b.example"}},
		{name: "any body", path: "/b.example", body: "not json at all", ctype: "text/plain", status: 200, wantResets: []string{"b.example"}},
		{name: "ipv6 encoded", path: "/%5B%3A%3A1%5D%3A8448", status: 200, wantResets: []string{"[::1]:8448"}},
		{name: "ipv6 raw", path: "/[::1]:8448", status: 200, wantResets: []string{"[::1]:8448"}},
		{name: "not failing", path: "/a.example", status: 400, errcode: "M_UNKNOWN",
			msg: "The retry timing does not need to be reset for this destination."},
		{name: "failure_ts without retry_last_ts", path: "/z.example", status: 400, errcode: "M_UNKNOWN",
			msg: "The retry timing does not need to be reset for this destination."},
		{name: "not failing, encoded port", path: "/d.example%3A8448", status: 400, errcode: "M_UNKNOWN",
			msg: "The retry timing does not need to be reset for this destination."},
		{name: "unknown", path: "/nope.example", status: 404, errcode: "M_NOT_FOUND", msg: "Unknown destination"},
		{name: "resetter fails", path: "/c.example", resetErr: errors.New("supervisor gone"), status: 500,
			errcode: "M_UNKNOWN", msg: "Internal server error", wantResets: []string{"c.example"}},
		// The read model showed it failing, the owner knows it is not.
		{name: "owner: not failing", path: "/c.example", resetErr: fmt.Errorf("owner: %w", destination.ErrNotFailing),
			status: 400, errcode: "M_UNKNOWN", msg: "The retry timing does not need to be reset for this destination.",
			wantResets: []string{"c.example"}},
		{name: "owner does not confirm", path: "/c.example", resetErr: fmt.Errorf("owner: %w", context.DeadlineExceeded),
			status: 504, errcode: "M_UNKNOWN", msg: "The destination's owner did not confirm the reset within 5s",
			wantResets: []string{"c.example"}},
		// The reset is stored after the newest event the read model shows,
		// and the read model never catches up: an error after 5 s, not a
		// 200 that the next read would contradict.
		{name: "read model does not show it", path: "/c.example", resetSeq: fakeResetSeq + 1, status: 504, errcode: "M_UNKNOWN",
			msg:        "The retry timings were reset (event 2), but the read model did not show it within 5s; it will show it once it catches up",
			wantResets: []string{"c.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.resetter.err, e.resetter.seq = tt.resetErr, tt.resetSeq
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			headers := []string{"Authorization", "Bearer " + token}
			if tt.ctype != "" {
				headers = append(headers, "Content-Type", tt.ctype)
			}
			r := e.doBody(t, "POST", base+tt.path+"/reset_connection", body, headers...)
			if tt.status == 200 {
				if r.status != 200 || r.raw != "{}" {
					t.Errorf("got %d %s, want 200 {}", r.status, r.raw)
				}
			} else {
				r.wantError(t, tt.status, tt.errcode, tt.msg)
			}
			if got := e.resetter.resets(); !slices.Equal(got, tt.wantResets) {
				t.Errorf("resets handed over = %v, want %v", got, tt.wantResets)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	routes := []struct{ method, path string }{
		{"GET", base},
		{"GET", base + "/b.example"},
		{"GET", base + "/b.example/rooms"},
		{"POST", base + "/b.example/reset_connection"},
	}
	tests := []struct {
		name    string
		tokens  []string
		target  string // query appended to the route
		headers []string
		status  int
		errcode string
		msg     string
	}{
		{name: "no token", tokens: []string{token}, headers: noAuth, status: 401, errcode: "M_MISSING_TOKEN", msg: "Missing access token"},
		{name: "wrong token", tokens: []string{token}, headers: []string{"Authorization", "Bearer nope"},
			status: 401, errcode: "M_UNKNOWN_TOKEN", msg: "Invalid access token passed."},
		{name: "token prefix", tokens: []string{token}, headers: []string{"Authorization", "Bearer " + token[:5]},
			status: 401, errcode: "M_UNKNOWN_TOKEN", msg: "Invalid access token passed."},
		{name: "empty bearer", tokens: []string{"", token}, headers: []string{"Authorization", "Bearer "},
			status: 401, errcode: "M_UNKNOWN_TOKEN", msg: "Invalid access token passed."},
		{name: "basic scheme", tokens: []string{token}, headers: []string{"Authorization", "Basic " + token},
			status: 401, errcode: "M_MISSING_TOKEN", msg: "Invalid Authorization header."},
		{name: "lower-case scheme", tokens: []string{token}, headers: []string{"Authorization", "bearer " + token},
			status: 401, errcode: "M_MISSING_TOKEN", msg: "Invalid Authorization header."},
		{name: "bearer alone", tokens: []string{token}, headers: []string{"Authorization", "Bearer"},
			status: 401, errcode: "M_MISSING_TOKEN", msg: "Invalid Authorization header."},
		{name: "two spaces", tokens: []string{token}, headers: []string{"Authorization", "Bearer  " + token},
			status: 401, errcode: "M_MISSING_TOKEN", msg: "Invalid Authorization header."},
		{name: "two headers", tokens: []string{token},
			headers: []string{"Authorization", "Bearer " + token, "Authorization", "Bearer " + token},
			status:  401, errcode: "M_MISSING_TOKEN", msg: "Too many Authorization headers."},
		{name: "header and query", tokens: []string{token}, target: "?access_token=" + token,
			headers: []string{"Authorization", "Bearer " + token},
			status:  401, errcode: "M_MISSING_TOKEN", msg: "Mixing Authorization headers and access_token query parameters."},
		{name: "query token", tokens: []string{token}, target: "?access_token=" + token, headers: noAuth, status: 200},
		{name: "wrong query token", tokens: []string{token}, target: "?access_token=nope", headers: noAuth,
			status: 401, errcode: "M_UNKNOWN_TOKEN", msg: "Invalid access token passed."},
		{name: "second token", tokens: []string{"other", token}, headers: []string{"Authorization", "Bearer " + token}, status: 200},
		{name: "no tokens configured", tokens: nil, headers: []string{"Authorization", "Bearer " + token},
			status: 403, errcode: "M_FORBIDDEN", msg: "You are not a server admin"},
		{name: "no tokens configured, no header", tokens: nil, headers: noAuth,
			status: 403, errcode: "M_FORBIDDEN", msg: "You are not a server admin"},
		{name: "only empty tokens configured", tokens: []string{""}, headers: []string{"Authorization", "Bearer "},
			status: 403, errcode: "M_FORBIDDEN", msg: "You are not a server admin"},
	}
	for _, tt := range tests {
		for _, rt := range routes {
			t.Run(tt.name+"/"+rt.method+" "+strings.TrimPrefix(rt.path, base), func(t *testing.T) {
				e := newEnv(t, func(o *admin.Options) { o.Tokens = tt.tokens })
				r := e.do(t, rt.method, rt.path+tt.target, tt.headers...)
				if tt.status == 200 {
					if r.status != 200 {
						t.Errorf("got %d %s, want 200", r.status, r.raw)
					}
					return
				}
				r.wantError(t, tt.status, tt.errcode, tt.msg)
				if tt.errcode == "M_UNKNOWN_TOKEN" && r.body["soft_logout"] != false {
					t.Errorf("soft_logout = %v, want false", r.body["soft_logout"])
				}
				if got := e.resetter.resets(); len(got) != 0 {
					t.Errorf("an unauthorised request handed over resets: %v", got)
				}
			})
		}
	}
}

func TestNotReady(t *testing.T) {
	e := newEnv(t)
	e.reader.notReady = true
	for _, rt := range []struct{ method, path string }{
		{"GET", base},
		{"GET", base + "/b.example"},
		{"GET", base + "/b.example/rooms"},
		{"POST", base + "/b.example/reset_connection"},
	} {
		r := e.do(t, rt.method, rt.path)
		r.wantError(t, 503, "M_UNKNOWN", "read model is not ready")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: no Retry-After", rt.method, rt.path)
		}
	}
	// Client errors do not wait for the read model.
	e.do(t, "GET", base+"?limit=-1").wantError(t, 400, "M_INVALID_PARAM", "")
	e.do(t, "GET", base+"/bad%20name").wantError(t, 404, "M_NOT_FOUND", "")
	if got := e.resetter.resets(); len(got) != 0 {
		t.Errorf("resets handed over while not ready: %v", got)
	}
}

func TestProbes(t *testing.T) {
	var readyErr error
	e := newEnv(t, func(o *admin.Options) {
		o.Tokens = nil // probes need no token, even with the admin API off
		o.Ready = func() error { return readyErr }
	})
	check := func(method, path string, status int, body string) {
		t.Helper()
		r := e.do(t, method, path, noAuth...)
		if r.status != status || r.raw != body {
			t.Errorf("%s %s = %d %q, want %d %q", method, path, r.status, r.raw, status, body)
		}
	}
	check("GET", "/healthz", 200, "ok")
	check("GET", "/livez", 200, "ok")
	check("GET", "/readyz", 200, "ok")
	readyErr = errors.New("the read model is still loading")
	check("GET", "/readyz", 503, "the read model is still loading")
	// Liveness does not follow readiness: a replica waiting for NATS or for
	// its partitions is not restarted.
	check("GET", "/healthz", 200, "ok")
	check("GET", "/livez", 200, "ok")

	// Without Ready, /readyz follows the Reader.
	e = newEnv(t)
	e.reader.notReady = true
	if r := e.do(t, "GET", "/readyz", noAuth...); r.status != 503 {
		t.Errorf("/readyz with a Reader not ready = %d %s, want 503", r.status, r.raw)
	}
	e.reader.notReady = false
	if r := e.do(t, "GET", "/readyz", noAuth...); r.status != 200 {
		t.Errorf("/readyz with a ready Reader = %d %s, want 200", r.status, r.raw)
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		method, path string
		status       int
		errcode      string
		allow        string
	}{
		{"GET", "/_synapse/admin/v1/federation/other", 404, "M_UNRECOGNIZED", ""},
		{"GET", "/", 404, "M_UNRECOGNIZED", ""},
		{"GET", base + "/b.example/", 404, "M_UNRECOGNIZED", ""},
		{"GET", base + "/b.example/rooms/", 404, "M_UNRECOGNIZED", ""},
		{"GET", base + "/b.example/other", 404, "M_UNRECOGNIZED", ""},
		{"POST", base + "//reset_connection", 404, "M_UNRECOGNIZED", ""},
		{"DELETE", base, 405, "M_UNRECOGNIZED", "GET, HEAD"},
		{"POST", base + "/b.example", 405, "M_UNRECOGNIZED", "GET, HEAD"},
		{"GET", base + "/b.example/reset_connection", 405, "M_UNRECOGNIZED", "POST"},
		{"PUT", base + "/b.example/reset_connection", 405, "M_UNRECOGNIZED", "POST"},
		{"POST", "/healthz", 405, "M_UNRECOGNIZED", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path)
			r.wantError(t, tt.status, tt.errcode, "Unrecognized request")
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
	if r := e.do(t, "HEAD", base+"/b.example"); r.status != 200 {
		t.Errorf("HEAD details = %d, want 200", r.status)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t)
	// A browser's preflight carries no token.
	r := e.do(t, "OPTIONS", base+"/b.example/reset_connection", noAuth...)
	if r.status != http.StatusNoContent {
		t.Errorf("preflight = %d %s, want 204", r.status, r.raw)
	}
	for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
		if r.header.Get(h) == "" {
			t.Errorf("preflight lacks %s", h)
		}
	}
	if !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("Access-Control-Allow-Headers = %q, want Authorization in it", r.header.Get("Access-Control-Allow-Headers"))
	}
	for _, r := range []response{e.do(t, "GET", base), e.do(t, "GET", base, noAuth...)} {
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%d answer lacks Access-Control-Allow-Origin: *", r.status)
		}
	}
}
