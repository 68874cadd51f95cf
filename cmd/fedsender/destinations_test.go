package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
)

type cliReader struct{ states []destination.State }

func (r cliReader) Get(name string) (destination.State, bool) {
	i := slices.IndexFunc(r.states, func(s destination.State) bool { return s.Destination == name })
	if i < 0 {
		return destination.State{}, false
	}
	return r.states[i], true
}
func (r cliReader) Page(q projection.Query) projection.Page { return projection.Select(r.states, q) }
func (r cliReader) Ready() bool                             { return true }
func (r cliReader) Sync(context.Context) error              { return nil }
func (r cliReader) EventSeq(context.Context, string) (uint64, error) {
	return 1, nil // as of cliResetter's resets
}

type cliRooms struct{}

func (cliRooms) Rooms(dest string, q projection.RoomQuery) (projection.RoomPage, bool) {
	if dest != "matrix.org:8448" {
		return projection.RoomPage{}, false
	}
	return projection.SelectRooms([]projection.Room{{RoomID: "!b:o", StreamOrdering: 9}, {RoomID: "!a:o", StreamOrdering: 4}}, q), true
}
func (cliRooms) Ready() bool { return true }

type cliResetter struct {
	mu  sync.Mutex
	got []string
}

func (r *cliResetter) Reset(_ context.Context, dest string) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, dest)
	return 1, nil
}

// startMicro serves the admin micro service over a small read model and
// returns the NATS URL.
func startMicro(t *testing.T) (string, *cliResetter) {
	t.Helper()
	nc, _, url := projectiontest.JetStream(t)
	res := &cliResetter{}
	rd := cliReader{states: []destination.State{
		{Destination: "matrix.org:8448", FailureTS: 1_700_000_000_000, RetryLastTS: 1_700_000_600_000, RetryInterval: 1_200_000, Offset: 42},
		{Destination: "example.com"},
		{Destination: "b.example.com", Offset: 7},
	}}
	projectiontest.Start(t, func(ctx context.Context) error {
		return admin.ServeMicro(ctx, nc, admin.Options{Reader: rd, Rooms: cliRooms{}, Resetter: res})
	})
	projectiontest.Eventually(t, 5*time.Second, func() bool {
		_, err := nc.Request(streams.AdminSubject("list"), nil, time.Second)
		return err == nil
	}, "the micro service does not answer")
	return url, res
}

func TestDestinationsCommand(t *testing.T) {
	url, res := startMicro(t)
	tests := []struct {
		args []string
		code int
		out  []string // each must appear in stdout (or stderr when code != 0)
	}{
		{[]string{"list"}, 0, []string{"DESTINATION", "matrix.org:8448", "2023-11-14T22:23:20Z", "20m0s", "42", "b.example.com", "total 3"}},
		{[]string{"list", "--limit", "1", "--order_by", "last_successful_stream_ordering", "--dir", "b"}, 0,
			[]string{"matrix.org:8448", "total 3; next page: --from 1"}},
		{[]string{"list", "--destination", "EXAMPLE", "--order-by", "destination"}, 0, []string{"b.example.com", "example.com", "total 2"}},
		{[]string{"list", "--json", "--destination", "matrix"}, 0,
			[]string{`{"destinations":[{"destination":"matrix.org:8448","retry_last_ts":1700000600000,"retry_interval":1200000,"failure_ts":1700000000000,"last_successful_stream_ordering":42}],"total":1}`}},
		{[]string{"show", "matrix.org:8448"}, 0, []string{"retry_interval", "20m0s", "last_successful_stream_ordering", "42"}},
		{[]string{"show", "--json", "example.com"}, 0,
			[]string{`{"destination":"example.com","retry_last_ts":0,"retry_interval":0,"failure_ts":null,"last_successful_stream_ordering":null}`}},
		{[]string{"rooms", "matrix.org:8448", "--dir", "b"}, 0, []string{"ROOM_ID", "!b:o", "9", "!a:o", "total 2"}},
		{[]string{"rooms", "--limit", "1", "matrix.org:8448"}, 0, []string{"!a:o", "next page: --from 1"}},
		{[]string{"reset", "matrix.org:8448"}, 0, []string{"reset of matrix.org:8448 done: retry timings cleared"}},
		// The service's errors, as the HTTP API's.
		{[]string{"list", "--from", "-5"}, 1, []string{"400 M_INVALID_PARAM: Query parameter from must be a positive integer."}},
		{[]string{"list", "--limit", "abc"}, 1, []string{"400 M_INVALID_PARAM: Query parameter limit must be an integer"}},
		{[]string{"list", "--order_by", "bogus"}, 1, []string{"400 M_INVALID_PARAM: Query parameter 'order_by' must be one of"}},
		{[]string{"list", "--dir", "x"}, 1, []string{"'dir' must be one of ['b', 'f']"}},
		{[]string{"show", "nope.example"}, 1, []string{"404 M_NOT_FOUND: Unknown destination"}},
		{[]string{"show", "*"}, 1, []string{"404 M_NOT_FOUND: Unknown destination"}},
		{[]string{"rooms", "a b"}, 1, []string{"404 M_NOT_FOUND: Unknown destination"}},
		{[]string{"reset", "example.com"}, 1, []string{"400 M_UNKNOWN: The retry timing does not need to be reset for this destination."}},
		// The command line's own errors.
		{[]string{"show"}, 1, []string{"show takes one destination NAME"}},
		{[]string{"list", "extra"}, 1, []string{"list takes no NAME"}},
		{[]string{"frobnicate"}, 1, []string{`unknown command "frobnicate"`}},
		{[]string{"list", "--nope"}, 1, []string{"flag provided but not defined: -nope"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"destinations"}, tt.args...)
			args = append(args, "--server", url)
			code, out, errs := runCmd(t, "", args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errs)
			}
			text := out
			if tt.code != 0 {
				text = errs
			}
			for _, want := range tt.out {
				if !strings.Contains(text, want) {
					t.Errorf("output lacks %q:\n%s", want, text)
				}
			}
		})
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if !slices.Equal(res.got, []string{"matrix.org:8448"}) {
		t.Errorf("resets = %v", res.got)
	}
}

func TestDestinationsCommandWithoutService(t *testing.T) {
	_, _, url := projectiontest.JetStream(t)
	code, _, errs := runCmd(t, "", "destinations", "list", "--server", url, "--timeout", "2s")
	if code != 1 || !strings.Contains(errs, "no fedsender answers on fedsender.admin.destinations.list") {
		t.Errorf("exit %d: %s", code, errs)
	}
}
