package admin_test

import (
	"maps"
	"net/url"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/projection"
)

// fakeRooms is a rooms read model made of a map.
type fakeRooms map[string][]projection.Room

func (f fakeRooms) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	rs, ok := f[dest]
	return projection.SelectRooms(rs, q), ok
}

func (fakeRooms) Ready() bool { return true }

// TestParseQuery checks the parser against what Twisted's parse_qs(qs, 1)
// returns for the same bytes.
func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want url.Values
	}{
		{"", url.Values{}},
		{"a=1&b=2", url.Values{"a": {"1"}, "b": {"2"}}},
		{"a=1;b=2", url.Values{"a": {"1"}, "b": {"2"}}},
		{"a=1;&b=2", url.Values{"a": {"1"}, "b": {"2"}}},
		{"order_by=nope;x", url.Values{"order_by": {"nope"}}},
		{"a=1&a=2;a=3", url.Values{"a": {"1", "2", "3"}}},
		{"&&;;", url.Values{}},
		{"a", url.Values{}},
		{"a;b=", url.Values{"b": {""}}},
		{"=v", url.Values{"": {"v"}}},
		{"a==b", url.Values{"a": {"=b"}}},
		{"a+b=c+d", url.Values{"a b": {"c d"}}},
		{"a=%2B+%2b", url.Values{"a": {"+ +"}}},
		{"%61=1", url.Values{"a": {"1"}}},
		{"a=%41%4a%4A", url.Values{"a": {"AJJ"}}},
		{"a=%zz", url.Values{"a": {"%zz"}}},
		{"a=%", url.Values{"a": {"%"}}},
		{"a=%4", url.Values{"a": {"%4"}}},
		{"a=%%41", url.Values{"a": {"%A"}}},
		{"a=%+1", url.Values{"a": {"% 1"}}},
		{"a=%FF%00", url.Values{"a": {"\xff\x00"}}},
		{"a=%3D%26%3B", url.Values{"a": {"=&;"}}},
		{"a=1#f", url.Values{"a": {"1#f"}}},
	}
	for _, tt := range tests {
		got := admin.ParseQuery(tt.raw)
		if !maps.EqualFunc(got, tt.want, slices.Equal) {
			t.Errorf("ParseQuery(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

// FuzzParseQuery: whatever the bytes, parsing does not fail, and what it
// found, encoded again, parses to the same parameters in the same order.
func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{"a=1;b=2&a=3", "order_by=nope;x", "%zz=%4;+=%2B", "a", "=", "a=%FF%00#f"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q := admin.ParseQuery(raw)
		if again := admin.ParseQuery(q.Encode()); !maps.EqualFunc(again, q, slices.Equal) {
			t.Errorf("ParseQuery(%q) = %q, but its encoding %q parses to %q", raw, q, q.Encode(), again)
		}
	})
}

// TestQueryStringAsSynapse: query strings are read as Synapse's web server
// (Twisted) reads them: pairs are separated by '&' and by ';', '+' is a
// space, a bad percent-escape is kept as it is, a pair without '=' is not
// a parameter, a blank value is a value, the first of duplicated
// parameters counts, and parameters an endpoint does not take are ignored.
// No parameter is dropped because of the bytes around it.
func TestQueryStringAsSynapse(t *testing.T) {
	e := newEnv(t, func(o *admin.Options) {
		o.Rooms = fakeRooms{"b.example": {{RoomID: "!a:o", StreamOrdering: 1}, {RoomID: "!b:o", StreamOrdering: 2}, {RoomID: "!c:o", StreamOrdering: 3}}}
	})
	const orderByValues = "Query parameter 'order_by' must be one of ['destination', 'retry_last_ts', 'retry_interval', 'failure_ts', 'last_successful_stream_ordering']"
	all := []string{"Upper.example", "[::1]:8448", "a.example", "b.example", "c.example", "d.example:8448", "z.example"}
	tests := []struct {
		query string
		// either an error
		status       int
		errcode, msg string
		// or the names listed and the next page's token
		names []string
		next  string
	}{
		// '&' and ';' both separate pairs.
		{query: "order_by=nope;x", status: 400, errcode: "M_INVALID_PARAM", msg: orderByValues},
		{query: "limit=1;&order_by=failure_ts", names: []string{"Upper.example"}, next: "1"},
		{query: "limit=1;order_by=failure_ts;dir=b", names: []string{"b.example"}, next: "1"},
		{query: "dir=b;limit=2", names: []string{"z.example", "d.example:8448"}, next: "2"},
		{query: "limit=2;;&&from=5", names: []string{"d.example:8448", "z.example"}},
		// Percent-escapes and '+', in names and values.
		{query: "%6Cimit=1", names: []string{"Upper.example"}, next: "1"},
		{query: "order_by=failure%5Fts&dir=b&limit=1", names: []string{"b.example"}, next: "1"},
		{query: "destination=D.EXAMPLE%3a8448", names: []string{"d.example:8448"}},
		{query: "dir=b+", status: 400, errcode: "M_INVALID_PARAM", msg: "Query parameter 'dir' must be one of ['b', 'f']"},
		{query: "dir=%2B", status: 400, errcode: "M_INVALID_PARAM", msg: "Query parameter 'dir' must be one of ['b', 'f']"},
		// A bad escape stays as it is, so the value is refused, not lost.
		{query: "order_by=%zz", status: 400, errcode: "M_INVALID_PARAM", msg: orderByValues},
		{query: "order_by=failure_ts%", status: 400, errcode: "M_INVALID_PARAM", msg: orderByValues},
		{query: "limit=%zz&order_by=failure_ts", status: 400, errcode: "M_INVALID_PARAM", msg: "Query parameter limit must be an integer"},
		{query: "destination=%FF", status: 400, errcode: "M_UNKNOWN", msg: "Query parameter 'destination' must be ascii"},
		// A blank value is a value; a pair without '=' is no parameter.
		{query: "limit=", status: 400, errcode: "M_INVALID_PARAM", msg: "Query parameter limit must be an integer"},
		{query: "order_by=", status: 400, errcode: "M_INVALID_PARAM", msg: orderByValues},
		{query: "limit", names: all},
		{query: "limit;dir=b;order_by=failure_ts", names: []string{"b.example", "c.example", "[::1]:8448", "Upper.example", "a.example", "d.example:8448", "z.example"}},
		// Duplicates: the first counts; unknown parameters are ignored.
		{query: "limit=2&limit=5", names: []string{"Upper.example", "[::1]:8448"}, next: "2"},
		{query: "limit=2;limit=nope", names: []string{"Upper.example", "[::1]:8448"}, next: "2"},
		{query: "limit=nope;limit=2", status: 400, errcode: "M_INVALID_PARAM", msg: "Query parameter limit must be an integer"},
		{query: "foo=bar;limit=1;Limit=5", names: []string{"Upper.example"}, next: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := e.do(t, "GET", base+"?"+tt.query)
			if tt.status != 0 {
				r.wantError(t, tt.status, tt.errcode, tt.msg)
				return
			}
			if r.status != 200 {
				t.Fatalf("got %d %s, want 200", r.status, r.raw)
			}
			var names []string
			for _, d := range r.body["destinations"].([]any) {
				names = append(names, d.(map[string]any)["destination"].(string))
			}
			next, _ := r.body["next_token"].(string)
			if !slices.Equal(names, tt.names) || next != tt.next {
				t.Errorf("listed %v with next_token %q, want %v with %q", names, next, tt.names, tt.next)
			}
		})
	}

	// /rooms reads its parameters alike.
	for query, want := range map[string]string{
		"limit=1;dir=b":        `{"rooms":[{"room_id":"!c:o","stream_ordering":3}],"total":3,"next_token":"1"}`,
		"dir=b;from=1;limit=1": `{"rooms":[{"room_id":"!b:o","stream_ordering":2}],"total":3,"next_token":"2"}`,
	} {
		if r := e.do(t, "GET", base+"/b.example/rooms?"+query); r.status != 200 || r.raw != want {
			t.Errorf("rooms?%s = %d %s, want 200 %s", query, r.status, r.raw, want)
		}
	}
	e.do(t, "GET", base+"/b.example/rooms?dir=x;limit=1").wantError(t, 400, "M_INVALID_PARAM", "Query parameter 'dir' must be one of ['b', 'f']")

	// So does the access token.
	if r := e.do(t, "GET", base+"?access_token="+token+";limit=1", "", ""); r.status != 200 || len(r.body["destinations"].([]any)) != 1 {
		t.Errorf("access_token and limit separated by ';' = %d %s, want 200 with one destination", r.status, r.raw)
	}
}
