package kvprojection

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
)

// benchIndex is an index of n generated destinations, without NATS.
func benchIndex(b *testing.B, n int) *Index {
	b.Helper()
	tbl := newTable()
	for _, s := range projectiontest.Generate(n, 9) {
		doc := documentOf(s, 1)
		tbl.put(&record{doc: doc}, false)
	}
	tbl.buildLists()
	return &Index{cur: tbl, ready: true}
}

// BenchmarkPage is one page of 100 at a random offset of 100,000
// destinations, per order and direction, with and without a search.
func BenchmarkPage(b *testing.B) {
	const n = 100_000
	x := benchIndex(b, n)
	for _, search := range []string{"", "example.net"} {
		for _, o := range projection.Orders() {
			for _, back := range []bool{false, true} {
				name := o.String()
				if back {
					name += "/b"
				}
				if search != "" {
					name += "/search"
				}
				b.Run(name, func(b *testing.B) {
					r := rand.New(rand.NewPCG(1, 1))
					for b.Loop() {
						x.Page(projection.Query{Search: search, Order: o, Backwards: back, From: int64(r.IntN(n)), Limit: 100})
					}
				})
			}
		}
	}
}

// BenchmarkUpdate is an offset change of one destination among 100,000:
// two of the ten ordered lists move it.
func BenchmarkUpdate(b *testing.B) {
	const n = 100_000
	x := benchIndex(b, n)
	names := make([]string, 0, n)
	for name := range x.cur.slot {
		names = append(names, name)
	}
	r := rand.New(rand.NewPCG(2, 2))
	for b.Loop() {
		old, _ := x.cur.get(names[r.IntN(n)])
		s := old.state()
		s.Offset += 1 + uint64(r.IntN(1000))
		doc := documentOf(s, old.doc.EventSequence)
		x.cur.put(&record{doc: doc}, true)
	}
}

// BenchmarkSearchCold is a search never asked before (a scan of every
// name), then its first page, at 100,000 destinations.
func BenchmarkSearchCold(b *testing.B) {
	const n = 100_000
	x := benchIndex(b, n)
	i := 0
	for b.Loop() {
		i++
		x.Page(projection.Query{Search: strconv.Itoa(i % 1000), Order: projection.ByLastSuccessfulStreamOrdering, Backwards: true, Limit: 100})
		if i%maxCachedSearches == 0 {
			x.cur.namesChanged()
		}
	}
}
