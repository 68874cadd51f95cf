package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

// surfaces is the HTTP admin API and the NATS micro service over the same
// read models, so that every case runs against both.
type surfaces struct {
	http     http.Handler
	nc       *nats.Conn
	loader   loader
	model    *swapModel
	resetter *fakeResetter
}

func newSurfaces(t *testing.T, load loader) *surfaces {
	t.Helper()
	nc, _, _ := projectiontest.JetStream(t)
	s := &surfaces{nc: nc, loader: load, model: &swapModel{}, resetter: &fakeResetter{}}
	opts := admin.Options{Tokens: []string{token}, Reader: s.model, Rooms: s.model, Resetter: s.resetter}
	s.http = admin.New(opts)
	projectiontest.Start(t, func(ctx context.Context) error { return admin.ServeMicro(ctx, nc, opts) })
	projectiontest.Eventually(t, 5*time.Second, func() bool {
		_, err := nc.Request(streams.AdminSubject("list"), nil, time.Second)
		return err == nil
	}, "the micro service does not answer")
	return s
}

// load replaces the read models' contents, and forgets the resets handed
// over so far.
func (s *surfaces) load(t *testing.T, states []destination.State, rooms map[string][]projection.Room) {
	t.Helper()
	s.model.set(s.loader(t, states, rooms))
	s.resetter.mu.Lock()
	s.resetter.calls, s.resetter.err = nil, nil
	s.resetter.mu.Unlock()
}

// call is one operation of the API, as both surfaces take it.
type call struct {
	op    string // list, show, rooms, reset
	dest  string // show, rooms, reset
	query string // the HTTP query string; the micro request's JSON keys
}

func (c call) String() string { return c.op + " " + c.dest + "?" + c.query }

// answer is what a surface answered.
type answer struct {
	status int
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %q is not a JSON object: %v", a.body, err)
	}
	return m
}

func (s *surfaces) viaHTTP(t *testing.T, c call) answer {
	t.Helper()
	method, path := http.MethodGet, base
	switch c.op {
	case "show":
		path += "/" + url.PathEscape(c.dest)
	case "rooms":
		path += "/" + url.PathEscape(c.dest) + "/rooms"
	case "reset":
		method, path = http.MethodPost, path+"/"+url.PathEscape(c.dest)+"/reset_connection"
	}
	if c.query != "" {
		path += "?" + c.query
	}
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	s.http.ServeHTTP(rec, req)
	return answer{status: rec.Code, body: rec.Body.Bytes()}
}

func (s *surfaces) viaMicro(t *testing.T, c call) answer {
	t.Helper()
	q, err := url.ParseQuery(c.query)
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]string{}
	for k, v := range q {
		req[k] = v[0]
	}
	if c.op != "list" {
		req["destination"] = c.dest
	}
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return s.micro(t, c.op, data)
}

// micro sends raw request data to an endpoint.
func (s *surfaces) micro(t *testing.T, op string, data []byte) answer {
	t.Helper()
	msg, err := s.nc.Request(streams.AdminSubject(op), data, 5*time.Second)
	if err != nil {
		t.Fatalf("micro %s: %v", op, err)
	}
	a := answer{status: http.StatusOK, body: msg.Data}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		if a.status, err = strconv.Atoi(code); err != nil {
			t.Fatalf("micro %s: error code %q is not a status", op, code)
		}
		var body map[string]any
		if json.Unmarshal(msg.Data, &body) != nil || msg.Header.Get(micro.ErrorHeader) != body["error"] {
			t.Errorf("micro %s: error header %q does not match the body %s", op, msg.Header.Get(micro.ErrorHeader), msg.Data)
		}
	}
	return a
}

// both runs a call on both surfaces, checks that they answer the same
// status and the same bytes, and returns the answer.
func (s *surfaces) both(t *testing.T, c call) answer {
	t.Helper()
	h, m := s.viaHTTP(t, c), s.viaMicro(t, c)
	if h.status != m.status || string(h.body) != string(m.body) {
		t.Errorf("%v: HTTP answered %d %s, micro %d %s", c, h.status, h.body, m.status, m.body)
	}
	return h
}

// synapseDestinations is Synapse's _create_destinations(n): subN.example.com
// failing since 50, last retry 50, interval 50, last stream ordering 100.
func synapseDestinations(n int) []destination.State {
	out := make([]destination.State, n)
	for i := range out {
		out[i] = destination.State{Destination: fmt.Sprintf("sub%d.example.com", i), FailureTS: 50, RetryLastTS: 50, RetryInterval: 50, Offset: 100}
	}
	return out
}

// orderFixture is Synapse's test_order_by: (failure_ts, retry_last_ts,
// retry_interval, last_successful_stream_ordering) chosen so every column
// orders the three differently.
var orderFixture = []destination.State{
	{Destination: "sub-a.example.com", FailureTS: 100, RetryLastTS: 300, RetryInterval: 200, Offset: 300},
	{Destination: "sub-b.example.com", FailureTS: 200, RetryLastTS: 200, RetryInterval: 100, Offset: 100},
	{Destination: "sub-c.example.com", FailureTS: 300, RetryLastTS: 100, RetryInterval: 300, Offset: 200},
}

const membershipDest = "sub0.example.com"

// synapseRooms is Synapse's _create_destination_rooms(n): n rooms of the
// destination, each at stream ordering 1234.
func synapseRooms(n int, prefix string) []projection.Room {
	out := make([]projection.Room, n)
	for i := range out {
		out[i] = projection.Room{RoomID: fmt.Sprintf("!%s%02d:test", prefix, i), StreamOrdering: 1234}
	}
	return out
}

// check is an expectation on an answer.
type check func(t *testing.T, a answer)

func status(code int, errcode string) check {
	return func(t *testing.T, a answer) {
		t.Helper()
		if a.status != code {
			t.Errorf("status %d %s, want %d", a.status, a.body, code)
			return
		}
		if errcode != "" && a.json(t)["errcode"] != errcode {
			t.Errorf("errcode in %s, want %s", a.body, errcode)
		}
	}
}

// page checks a list or rooms answer: total, page length, next_token ("" for
// absent) and, for the destinations list, that every field is present.
func page(key string, total, n int, next string) check {
	return func(t *testing.T, a answer) {
		t.Helper()
		status(200, "")(t, a)
		m := a.json(t)
		items, _ := m[key].([]any)
		if m["total"] != float64(total) || len(items) != n {
			t.Errorf("total %v with %d %s, want %d with %d: %s", m["total"], len(items), key, total, n, a.body)
		}
		got, has := m["next_token"]
		if next == "" && has || next != "" && got != next {
			t.Errorf("next_token %v, want %q", got, next)
		}
		for _, it := range items {
			obj := it.(map[string]any)
			fields := []string{"destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"}
			if key == "rooms" {
				fields = []string{"room_id", "stream_ordering"}
			}
			for _, f := range fields {
				if _, ok := obj[f]; !ok {
					t.Errorf("%s lacks %s: %v", key, f, obj)
				}
			}
		}
	}
}

// order checks the names of a list answer.
func order(names ...string) check {
	return func(t *testing.T, a answer) {
		t.Helper()
		status(200, "")(t, a)
		var got []string
		for _, d := range a.json(t)["destinations"].([]any) {
			got = append(got, d.(map[string]any)["destination"].(string))
		}
		if !slices.Equal(got, names) {
			t.Errorf("order %v, want %v", got, names)
		}
		if a.json(t)["total"] != float64(len(names)) {
			t.Errorf("total %v, want %d", a.json(t)["total"], len(names))
		}
	}
}

func exact(body string) check {
	return func(t *testing.T, a answer) {
		t.Helper()
		if a.status != 200 || string(a.body) != body {
			t.Errorf("got %d %s, want 200 %s", a.status, a.body, body)
		}
	}
}

// compatCase is a call of one of Synapse's tests and what it asserts.
type compatCase struct {
	name string
	call call
	want check
}

// compatGroup is cases over the same contents of the read models.
type compatGroup struct {
	name   string
	states []destination.State
	rooms  map[string][]projection.Room
	cases  []compatCase
}

// The destination of DestinationMembershipTestCase, recorded with no retry
// timings.
var membershipKnown = []destination.State{{Destination: membershipDest}}

func membershipRooms(n int) map[string][]projection.Room {
	return map[string][]projection.Room{membershipDest: synapseRooms(n, "r")}
}

// synapseGroups are the cases of Synapse's tests/rest/admin/test_federation.py
// that check one answer each.
func synapseGroups() []compatGroup {
	a, b, c := orderFixture[0].Destination, orderFixture[1].Destination, orderFixture[2].Destination
	return []compatGroup{
		{name: "invalid parameters", states: synapseDestinations(3), cases: []compatCase{
			{"negative limit", call{op: "list", query: "limit=-5"}, status(400, "M_INVALID_PARAM")},
			{"negative from", call{op: "list", query: "from=-5"}, status(400, "M_INVALID_PARAM")},
			{"unknown order_by", call{op: "list", query: "order_by=bar"}, status(400, "M_INVALID_PARAM")},
			{"invalid dir", call{op: "list", query: "dir=bar"}, status(400, "M_INVALID_PARAM")},
			{"unknown destination", call{op: "show", dest: "dummy"}, status(404, "M_NOT_FOUND")},
			{"reset of an unknown destination", call{op: "reset", dest: "dummy"}, status(404, "M_NOT_FOUND")},
		}},
		{name: "paging", states: synapseDestinations(20), cases: []compatCase{
			{"limit", call{op: "list", query: "limit=5"}, page("destinations", 20, 5, "5")},
			{"from", call{op: "list", query: "from=5"}, page("destinations", 20, 15, "")},
			{"limit and from", call{op: "list", query: "from=5&limit=10"}, page("destinations", 20, 10, "15")},
			{"limit = total", call{op: "list", query: "limit=20"}, page("destinations", 20, 20, "")},
			{"limit > total", call{op: "list", query: "limit=21"}, page("destinations", 20, 20, "")},
			{"limit < total", call{op: "list", query: "limit=19"}, page("destinations", 20, 19, "19")},
			{"from next_token", call{op: "list", query: "from=19"}, page("destinations", 20, 1, "")},
			{"all", call{op: "list"}, page("destinations", 20, 20, "")},
		}},
		{name: "order_by", states: orderFixture, cases: []compatCase{
			{"default", call{op: "list"}, order(a, b, c)},
			{"default f", call{op: "list", query: "dir=f"}, order(a, b, c)},
			{"default b", call{op: "list", query: "dir=b"}, order(c, b, a)},
			{"destination", call{op: "list", query: "order_by=destination"}, order(a, b, c)},
			{"destination f", call{op: "list", query: "order_by=destination&dir=f"}, order(a, b, c)},
			{"destination b", call{op: "list", query: "order_by=destination&dir=b"}, order(c, b, a)},
			{"failure_ts", call{op: "list", query: "order_by=failure_ts"}, order(a, b, c)},
			{"failure_ts f", call{op: "list", query: "order_by=failure_ts&dir=f"}, order(a, b, c)},
			{"failure_ts b", call{op: "list", query: "order_by=failure_ts&dir=b"}, order(c, b, a)},
			{"retry_last_ts", call{op: "list", query: "order_by=retry_last_ts"}, order(c, b, a)},
			{"retry_last_ts f", call{op: "list", query: "order_by=retry_last_ts&dir=f"}, order(c, b, a)},
			{"retry_last_ts b", call{op: "list", query: "order_by=retry_last_ts&dir=b"}, order(a, b, c)},
			{"retry_interval", call{op: "list", query: "order_by=retry_interval"}, order(b, a, c)},
			{"retry_interval f", call{op: "list", query: "order_by=retry_interval&dir=f"}, order(b, a, c)},
			{"retry_interval b", call{op: "list", query: "order_by=retry_interval&dir=b"}, order(c, a, b)},
			{"last_successful_stream_ordering", call{op: "list", query: "order_by=last_successful_stream_ordering"}, order(b, c, a)},
			{"last_successful_stream_ordering f", call{op: "list", query: "order_by=last_successful_stream_ordering&dir=f"}, order(b, c, a)},
			{"last_successful_stream_ordering b", call{op: "list", query: "order_by=last_successful_stream_ordering&dir=b"}, order(a, c, b)},
		}},
		{name: "search", states: synapseDestinations(3), cases: []compatCase{
			{"0", call{op: "list", query: "destination=0"}, order("sub0.example.com")},
			{"sub0", call{op: "list", query: "destination=sub0"}, order("sub0.example.com")},
			{"1", call{op: "list", query: "destination=1"}, order("sub1.example.com")},
			{"1.", call{op: "list", query: "destination=1."}, order("sub1.example.com")},
			{"case-insensitive", call{op: "list", query: "destination=SUB0"}, order("sub0.example.com")},
			{"foo", call{op: "list", query: "destination=foo"}, order()},
			{"bar", call{op: "list", query: "destination=bar"}, order()},
		}},
		{name: "details and reset", states: append(synapseDestinations(1),
			destination.State{Destination: "idle.example.com"}), cases: []compatCase{
			{"with retry timings", call{op: "show", dest: "sub0.example.com"},
				exact(`{"destination":"sub0.example.com","retry_last_ts":50,"retry_interval":50,"failure_ts":50,"last_successful_stream_ordering":100}`)},
			{"without retry timings", call{op: "show", dest: "idle.example.com"},
				exact(`{"destination":"idle.example.com","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null}`)},
			{"reset", call{op: "reset", dest: "sub0.example.com"}, exact(`{}`)},
			{"reset not required", call{op: "reset", dest: "idle.example.com"}, func(t *testing.T, a answer) {
				t.Helper()
				status(400, "M_UNKNOWN")(t, a)
				if a.json(t)["error"] != "The retry timing does not need to be reset for this destination." {
					t.Errorf("error %s", a.body)
				}
			}},
		}},
		{name: "rooms invalid parameters", states: membershipKnown, rooms: membershipRooms(3), cases: []compatCase{
			{"negative limit", call{op: "rooms", dest: membershipDest, query: "limit=-5"}, status(400, "M_INVALID_PARAM")},
			{"negative from", call{op: "rooms", dest: membershipDest, query: "from=-5"}, status(400, "M_INVALID_PARAM")},
			{"invalid dir", call{op: "rooms", dest: membershipDest, query: "dir=bar"}, status(400, "M_INVALID_PARAM")},
			{"unknown destination", call{op: "rooms", dest: "invalid"}, status(404, "M_NOT_FOUND")},
		}},
		{name: "rooms paging of 5", states: membershipKnown, rooms: membershipRooms(5), cases: []compatCase{
			{"limit", call{op: "rooms", dest: membershipDest, query: "limit=3"}, page("rooms", 5, 3, "3")},
			{"limit = total", call{op: "rooms", dest: membershipDest, query: "limit=5"}, page("rooms", 5, 5, "")},
			{"limit > total", call{op: "rooms", dest: membershipDest, query: "limit=6"}, page("rooms", 5, 5, "")},
			{"limit < total", call{op: "rooms", dest: membershipDest, query: "limit=4"}, page("rooms", 5, 4, "4")},
			{"from next_token", call{op: "rooms", dest: membershipDest, query: "from=4"}, page("rooms", 5, 1, "")},
		}},
		{name: "rooms paging of 10", states: membershipKnown, rooms: membershipRooms(10), cases: []compatCase{
			{"from", call{op: "rooms", dest: membershipDest, query: "from=5"}, page("rooms", 10, 5, "")},
			{"limit and from", call{op: "rooms", dest: membershipDest, query: "from=3&limit=5"}, page("rooms", 10, 5, "8")},
			{"all", call{op: "rooms", dest: membershipDest}, page("rooms", 10, 10, "")},
		}},
		{name: "rooms filtering", states: membershipKnown, rooms: map[string][]projection.Room{
			membershipDest: synapseRooms(2, "mine"),
			// Synapse records a destination when it queues a PDU for it:
			// known through its rooms alone.
			"other.destination.org": synapseRooms(1, "other"),
		}, cases: []compatCase{
			{"own rooms", call{op: "rooms", dest: membershipDest}, exact(`{"rooms":[{"room_id":"!mine00:test","stream_ordering":1234},{"room_id":"!mine01:test","stream_ordering":1234}],"total":2}`)},
			{"other's rooms", call{op: "rooms", dest: "other.destination.org"}, exact(`{"rooms":[{"room_id":"!other00:test","stream_ordering":1234}],"total":1}`)},
			{"other shown with nothing recorded", call{op: "show", dest: "other.destination.org"},
				exact(`{"destination":"other.destination.org","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null}`)},
		}},
	}
}

// TestSynapseCompatibility walks the cases of Synapse's
// tests/rest/admin/test_federation.py (FederationTestCase and
// DestinationMembershipTestCase) against the HTTP API and the NATS micro
// service, which must answer alike, byte for byte, over each read model.
func TestSynapseCompatibility(t *testing.T) {
	eachModel(t, func(t *testing.T, load loader) {
		s := newSurfaces(t, load)
		for _, g := range synapseGroups() {
			t.Run(g.name, func(t *testing.T) {
				s.load(t, g.states, g.rooms)
				for _, tc := range g.cases {
					t.Run(tc.name, func(t *testing.T) {
						tc.want(t, s.both(t, tc.call))
					})
				}
			})
		}
		t.Run("order direction", func(t *testing.T) { testRoomsDirection(t, s) })
		t.Run("reset connection", func(t *testing.T) { testResetConnection(t, s) })
	})
}

// testRoomsDirection is Synapse's test_order_direction: the two directions
// are each other's reverse.
func testRoomsDirection(t *testing.T, s *surfaces) {
	s.load(t, membershipKnown, membershipRooms(4))
	asc := s.both(t, call{op: "rooms", dest: membershipDest, query: "dir=f"}).json(t)["rooms"].([]any)
	desc := s.both(t, call{op: "rooms", dest: membershipDest, query: "dir=b"}).json(t)["rooms"].([]any)
	if len(asc) != 4 || len(desc) != 4 {
		t.Fatalf("rooms f %v, b %v", asc, desc)
	}
	for i := range asc {
		if asc[i].(map[string]any)["room_id"] != desc[3-i].(map[string]any)["room_id"] {
			t.Errorf("dir=b is not the reverse of dir=f: %v / %v", asc, desc)
		}
	}
}

// testResetConnection is Synapse's test_destination_reset_connection: the
// reset goes to the destination's owner.
func testResetConnection(t *testing.T, s *surfaces) {
	s.load(t, synapseDestinations(1), nil)
	s.both(t, call{op: "reset", dest: "sub0.example.com"})
	if got := s.resetter.resets(); !slices.Equal(got, []string{"sub0.example.com", "sub0.example.com"}) {
		t.Errorf("resets handed over = %v, want one per surface", got)
	}
}

// TestSynapseAdminRequests replays the synapse-admin web UI's own requests
// (its dataProvider): list with the search filter and react-admin's sort,
// getOne with the name encoded (":" as %3A), the rooms reference with the
// name raw and an order_by Synapse ignores, and reset_connection as a POST
// with no body and no Content-Type. With a valid token nothing is ever
// 401 or 403.
func TestSynapseAdminRequests(t *testing.T) {
	states := append(slices.Clone(fixture), destination.State{Destination: "matrix.org:8448", FailureTS: 7, RetryLastTS: 9, RetryInterval: 600_000, Offset: 3})
	rooms := map[string][]projection.Room{"matrix.org:8448": {{RoomID: "!b:o", StreamOrdering: 3}, {RoomID: "!a:o", StreamOrdering: 2}}}
	eachModel(t, func(t *testing.T, load loader) {
		model, resetter := load(t, states, rooms), &fakeResetter{}
		h := admin.New(admin.Options{Tokens: []string{token}, Reader: model, Rooms: model, Resetter: resetter})
		headers := []string{"Authorization", "Bearer " + token, "Accept", "application/json"}
		tests := []struct {
			method, target string
			status         int
			body           string // "" to skip
		}{
			{"GET", base + "?dir=f&from=0&limit=10&order_by=destination", 200, ""},
			{"GET", base + "?destination=matrix&dir=b&from=0&limit=10&order_by=retry_last_ts", 200,
				`{"destinations":[{"destination":"matrix.org:8448","retry_last_ts":9,"retry_interval":600000,"failure_ts":7,"last_successful_stream_ordering":3}],"total":1}`},
			{"GET", base + "/matrix.org%3A8448", 200,
				`{"destination":"matrix.org:8448","retry_last_ts":9,"retry_interval":600000,"failure_ts":7,"last_successful_stream_ordering":3}`},
			{"GET", base + "/matrix.org:8448/rooms?dir=f&from=0&limit=10&order_by=room_id", 200,
				`{"rooms":[{"room_id":"!a:o","stream_ordering":2},{"room_id":"!b:o","stream_ordering":3}],"total":2}`},
			{"GET", base + "/matrix.org%3A8448/rooms?dir=b&from=1&limit=1&order_by=stream_ordering", 200,
				`{"rooms":[{"room_id":"!a:o","stream_ordering":2}],"total":2}`},
			{"POST", base + "/matrix.org:8448/reset_connection", 200, `{}`},
			{"POST", base + "/matrix.org%3A8448/reset_connection", 200, `{}`},
			{"OPTIONS", base + "/matrix.org:8448/reset_connection", 204, ""},
		}
		for _, tt := range tests {
			t.Run(tt.method+" "+tt.target, func(t *testing.T) {
				req := httptest.NewRequest(tt.method, tt.target, nil) // no body, no Content-Type
				for i := 0; i < len(headers); i += 2 {
					req.Header.Set(headers[i], headers[i+1])
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body, _ := io.ReadAll(rec.Body)
				if rec.Code == 401 || rec.Code == 403 {
					t.Fatalf("a valid token got %d %s", rec.Code, body)
				}
				if rec.Code != tt.status || tt.body != "" && string(body) != tt.body {
					t.Errorf("got %d %s\nwant %d %s", rec.Code, body, tt.status, tt.body)
				}
			})
		}
		if got := resetter.resets(); !slices.Equal(got, []string{"matrix.org:8448", "matrix.org:8448"}) {
			t.Errorf("resets = %v", got)
		}
	})
}

// TestMicroBadInput: malformed requests get a micro error with a clear
// message, and names that are not server names (NATS wildcards, spaces,
// over-long) are unknown, on every endpoint, without reaching the owner.
func TestMicroBadInput(t *testing.T) {
	eachModel(t, testMicroBadInput)
}

func testMicroBadInput(t *testing.T, load loader) {
	s := newSurfaces(t, load)
	s.load(t, synapseDestinations(3), map[string][]projection.Room{"sub0.example.com": synapseRooms(1, "r")})
	tests := []struct {
		op, data string
		status   int
		errcode  string
		msg      string // a part of the error text
	}{
		{"list", `{`, 400, "M_NOT_JSON", "Content not JSON"},
		{"list", `[1,2]`, 400, "M_NOT_JSON", "expected an object"},
		{"list", `null`, 400, "M_NOT_JSON", "expected an object"},
		{"list", `"from"`, 400, "M_NOT_JSON", "expected an object"},
		{"list", `{"from":0} {"x":1}`, 400, "M_NOT_JSON", "trailing data"},
		{"show", `not json`, 400, "M_NOT_JSON", "invalid character"},
		{"reset", `{"destination":`, 400, "M_NOT_JSON", "Content not JSON"},
		{"list", `{"order":"destination"}`, 400, "M_INVALID_PARAM", "Unknown parameter 'order'"},
		{"list", `{"from":true}`, 400, "M_INVALID_PARAM", "must be a string or a number"},
		{"list", `{"limit":[5]}`, 400, "M_INVALID_PARAM", "must be a string or a number"},
		{"list", `{"from":-5}`, 400, "M_INVALID_PARAM", "Query parameter from must be a positive integer."},
		{"list", `{"from":"abc"}`, 400, "M_INVALID_PARAM", "Query parameter from must be an integer"},
		{"list", `{"limit":1.5}`, 400, "M_INVALID_PARAM", "Query parameter limit must be an integer"},
		{"list", `{"limit":1e3}`, 400, "M_INVALID_PARAM", "Query parameter limit must be an integer"},
		{"list", `{"order_by":"nope"}`, 400, "M_INVALID_PARAM", "order_by"},
		{"list", `{"dir":"x"}`, 400, "M_INVALID_PARAM", "'dir' must be one of ['b', 'f']"},
		{"list", `{"destination":"é"}`, 400, "M_UNKNOWN", "must be ascii"},
		{"show", `{}`, 400, "M_MISSING_PARAM", "Missing string parameter 'destination'"},
		{"show", ``, 400, "M_MISSING_PARAM", "Missing string parameter 'destination'"},
		{"show", `{"destination":5}`, 404, "M_NOT_FOUND", "Unknown destination"},
		{"rooms", `{"destination":"sub0.example.com","limit":-1}`, 400, "M_INVALID_PARAM", "limit"},
		{"rooms", `{"destination":"sub0.example.com","from":"x"}`, 400, "M_INVALID_PARAM", "from"},
		{"rooms", `{"destination":"sub0.example.com","room":"!r"}`, 400, "M_INVALID_PARAM", "Unknown parameter 'room'"},
	}
	for _, name := range []string{"*", ">", "sub0.example.com.>", "sub0.*", "a b", " sub0.example.com", "sub0.example.com\n",
		"fedsender.control.0.reset", "..", "", strings.Repeat("a", 256), strings.Repeat("a.", 200) + "com", "%2A", "sub0.example.com/rooms"} {
		q, _ := json.Marshal(map[string]string{"destination": name})
		for _, op := range []string{"show", "rooms", "reset"} {
			tests = append(tests, struct {
				op, data string
				status   int
				errcode  string
				msg      string
			}{op, string(q), 404, "M_NOT_FOUND", "Unknown destination"})
		}
	}
	for _, tt := range tests {
		t.Run(tt.op+" "+tt.data, func(t *testing.T) {
			a := s.micro(t, tt.op, []byte(tt.data))
			if a.status != tt.status {
				t.Fatalf("status %d %s, want %d", a.status, a.body, tt.status)
			}
			m := a.json(t)
			if m["errcode"] != tt.errcode || !strings.Contains(fmt.Sprint(m["error"]), tt.msg) {
				t.Errorf("answer %s, want %s with %q", a.body, tt.errcode, tt.msg)
			}
		})
	}
	// The same names in HTTP paths: the same 404, byte for byte.
	for _, name := range []string{"*", ">", "sub0.example.com.>", "a b", "fedsender.control.0.reset", strings.Repeat("a", 256), "sub0.example.com/rooms"} {
		for _, op := range []string{"show", "rooms", "reset"} {
			if a := s.both(t, call{op: op, dest: name}); a.status != 404 {
				t.Errorf("%s %q over HTTP = %d %s, want 404", op, name, a.status, a.body)
			}
		}
	}
	if got := s.resetter.resets(); len(got) != 0 {
		t.Errorf("bad requests reached the owner: %v", got)
	}
	// Good requests still work, with numbers or strings, and null as absent.
	if a := s.micro(t, "list", []byte(`{"from":1,"limit":"1","order_by":null}`)); a.status != 200 || !strings.Contains(string(a.body), `"next_token":"2"`) {
		t.Errorf("list with mixed types = %d %s", a.status, a.body)
	}
}
