package kvprojection

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
)

func TestBlockListAgainstSortedSlice(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	l := newBlockList(cmp.Compare[int])
	var ref []int
	for i := range 20_000 {
		x := r.IntN(3000)
		pos, found := slices.BinarySearch(ref, x)
		switch {
		case i%5 == 4:
			l.build(ref)
		case found:
			if !l.Delete(x) {
				t.Fatalf("Delete(%d) found nothing", x)
			}
			ref = slices.Delete(ref, pos, pos+1)
		default:
			l.Insert(x)
			ref = slices.Insert(ref, pos, x)
		}
		if l.Len() != len(ref) {
			t.Fatalf("Len = %d, want %d", l.Len(), len(ref))
		}
	}
	var got []int
	l.Ascend(0, func(x int) bool { got = append(got, x); return true })
	if !slices.Equal(got, ref) {
		t.Fatalf("contents differ from the reference")
	}
	for _, from := range []int{0, 1, len(ref) / 3, len(ref) - 1, len(ref), len(ref) + 5} {
		var page []int
		l.Ascend(from, func(x int) bool { page = append(page, x); return len(page) < 10 })
		want := ref[min(from, len(ref)):min(from+10, len(ref))]
		if !slices.Equal(page, want) {
			t.Errorf("Ascend(%d) = %v, want %v", from, page, want)
		}
	}
	if l.Delete(-1) {
		t.Error("Delete of a missing item reported true")
	}
}

// TestTableUpdates applies random updates and deletes to an indexed table
// and checks every answer against the reference after each round.
func TestTableUpdates(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	states := projectiontest.Generate(400, 5)
	tbl := newTable()
	x := &Index{cur: tbl, ready: true}
	live := map[string]destination.State{}
	put := func(s destination.State, indexed bool) {
		doc := documentOf(s, 1)
		tbl.put(&record{doc: doc}, indexed)
		live[s.Destination] = s
	}
	for _, s := range states[:200] {
		put(s, false)
	}
	tbl.buildLists()
	for round := range 20 {
		for range 50 {
			s := states[r.IntN(len(states))]
			switch r.IntN(4) {
			case 0:
				tbl.remove(s.Destination, 1, true)
				delete(live, s.Destination)
			case 1:
				s.Offset += uint64(r.IntN(100))
				put(s, true)
			default:
				s.RetryLastTS, s.FailureTS, s.RetryInterval = int64(r.IntN(9)), int64(r.IntN(9)), int64(r.IntN(3))
				put(s, true)
			}
		}
		var all []destination.State
		for _, s := range live {
			all = append(all, s)
		}
		for _, q := range projectiontest.Queries(len(all)) {
			got, want := x.Page(q), projection.Select(all, q)
			if got.Total != want.Total || len(got.Destinations) != len(want.Destinations) {
				t.Fatalf("round %d: Page(%+v) total %d len %d, want %d %d", round, q, got.Total, len(got.Destinations), want.Total, len(want.Destinations))
			}
			for i := range got.Destinations {
				if got.Destinations[i] != projection.Shown(want.Destinations[i]) {
					t.Fatalf("round %d: Page(%+v)[%d] = %+v, want %+v", round, q, i, got.Destinations[i], want.Destinations[i])
				}
			}
		}
	}
}
