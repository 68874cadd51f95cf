// Package projectiontest is the contract every read model of destinations
// must meet: for any set of states, every order, direction, page and search
// answers exactly as projection.Select does, and Get finds each destination
// as shown. Each implementation's tests call Run with a loader.
package projectiontest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// Reader is the read model under test (admin.Reader's methods).
type Reader interface {
	Get(name string) (destination.State, bool)
	Page(q projection.Query) projection.Page
	Ready() bool
}

// Loader returns a ready read model that holds exactly states.
type Loader func(t *testing.T, states []destination.State) Reader

// Fixture is a small set with ties on every column, upper-case letters, a
// port and an IPv6 literal, and a destination with a failure_ts but no
// retry_last_ts (not failing, so shown without it).
func Fixture() []destination.State {
	return []destination.State{
		{Destination: "a.example"},
		{Destination: "b.example", FailureTS: 100, RetryLastTS: 300, RetryInterval: 600_000, Offset: 50},
		{Destination: "z.example", FailureTS: 999, Offset: 70},
		{Destination: "[::1]:8448", FailureTS: 50, RetryLastTS: 400, RetryInterval: 1_200_000, Offset: 10},
		{Destination: "c.example", FailureTS: 100, RetryLastTS: 200, RetryInterval: 600_000, Offset: 50},
		{Destination: "Upper.example"},
		{Destination: "d.example:8448", Offset: 70},
	}
}

// Generate returns n distinct destinations with columns drawn from small
// sets (so that ties are common), deterministic for a seed.
func Generate(n int, seed uint64) []destination.State {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]destination.State, n)
	for i := range out {
		name := fmt.Sprintf("s%06d.example.org", i)
		switch i % 7 {
		case 1:
			name = fmt.Sprintf("Mx%06d.Example.COM", i)
		case 2:
			name = fmt.Sprintf("h%06d.example.net:%d", i, 8000+i%100)
		case 3:
			name = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		}
		s := destination.State{Destination: name}
		if r.IntN(3) > 0 {
			s.Offset = uint64(r.IntN(50))
		}
		switch r.IntN(4) {
		case 0: // failing
			s.FailureTS = int64(1_700_000_000_000 + r.IntN(20)*1000)
			s.RetryLastTS = s.FailureTS + int64(r.IntN(5)*1000)
			s.RetryInterval = int64(600_000 << r.IntN(4))
		case 1: // recovered, with a leftover failure_ts that is not shown
			s.FailureTS = int64(1_700_000_000_000 + r.IntN(20)*1000)
		}
		out[i] = s
	}
	return out
}

// Queries returns the queries Run asks of a set of n destinations.
func Queries(n int) []projection.Query {
	var out []projection.Query
	pages := [][2]int64{{0, 100}, {0, 0}, {0, 1}, {1, 3}, {int64(n) / 2, 7}, {int64(n) - 1, 5},
		{int64(n), 5}, {int64(n) + 10, 5}, {0, int64(n)}, {3, 1<<63 - 1}, {1<<63 - 1, 1<<63 - 1}}
	searches := []string{"", "example", "EXAMPLE", "upper", ":8448", "[::1]", "00001", "mx0", ".net:80", "10.", "nomatch", "_", "%"}
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			for _, pg := range pages {
				if pg[0] < 0 {
					continue
				}
				for _, s := range searches {
					out = append(out, projection.Query{Search: s, Order: o, Backwards: back, From: pg[0], Limit: pg[1]})
				}
			}
		}
	}
	return out
}

// Run checks a read model against projection.Select on the fixture and on
// generated sets.
func Run(t *testing.T, load Loader) {
	t.Helper()
	sets := []struct {
		name   string
		states []destination.State
	}{
		{"fixture", Fixture()},
		{"generated", append(Fixture(), Generate(300, 1)...)},
		{"empty", nil},
	}
	for _, set := range sets {
		t.Run(set.name, func(t *testing.T) {
			rd := load(t, slices.Clone(set.states))
			if !rd.Ready() {
				t.Fatal("loader returned a read model that is not ready")
			}
			Check(t, rd, set.states)
		})
	}
}

// Check compares every query and every Get of rd with the reference
// answers over states.
func Check(t *testing.T, rd Reader, states []destination.State) {
	t.Helper()
	for _, s := range states {
		got, ok := rd.Get(s.Destination)
		if !ok || projection.Shown(got) != projection.Shown(s) {
			t.Errorf("Get(%q) = %+v, %v; want %+v", s.Destination, got, ok, projection.Shown(s))
		}
	}
	for _, name := range []string{"nope.example", "A.EXAMPLE", ""} {
		if got, ok := rd.Get(name); ok {
			t.Errorf("Get(%q) = %+v, want unknown", name, got)
		}
	}
	fails := 0
	for _, q := range Queries(len(states)) {
		want := projection.Select(states, q)
		got := rd.Page(q)
		if !samePage(got, want) {
			fails++
			if fails <= 5 {
				t.Errorf("Page(%+v):\n got total %d %v\nwant total %d %v", q, got.Total, names(got), want.Total, names(want))
			}
		}
	}
	if fails > 5 {
		t.Errorf("... and %d more queries answered differently", fails-5)
	}
}

func samePage(a, b projection.Page) bool {
	if a.Total != b.Total || len(a.Destinations) != len(b.Destinations) || a.Destinations == nil {
		return false
	}
	for i := range a.Destinations {
		if projection.Shown(a.Destinations[i]) != projection.Shown(b.Destinations[i]) {
			return false
		}
	}
	return true
}

func names(p projection.Page) []string {
	out := make([]string, len(p.Destinations))
	for i, s := range p.Destinations {
		out[i] = s.Destination
	}
	return out
}
