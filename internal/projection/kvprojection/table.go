package kvprojection

import (
	"cmp"
	"math/bits"
	"strings"
	"sync"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// record is one destination's document in the Index.
type record struct {
	doc Document
	rev uint64 // the key's revision
}

// state is the destination's state as shown.
func (r *record) state() destination.State { return projection.Shown(r.doc.State()) }

// numOrders and numLists: one ordered list per (order, direction).
const (
	numOrders = int(projection.ByLastSuccessfulStreamOrdering) + 1
	numLists  = 2 * numOrders
)

func listOf(o projection.Order, backwards bool) int {
	i := 2 * int(o)
	if backwards {
		i++
	}
	return i
}

// maxCachedSearches bounds the match sets kept between queries.
const maxCachedSearches = 16

// table is the Index's contents for one load of the bucket.
//
// Each destination has a slot, kept while it exists; the columns live in
// flat arrays by slot, and the ordered lists hold slots. An update that
// leaves an order's column alone touches none of its lists, and walking a
// list in a search reads only contiguous memory.
type table struct {
	slot  map[string]uint32 // by name
	recs  []*record         // by slot; nil: free
	names []string          // by slot
	lower []string          // by slot: the name lower-cased, for searches
	keys  [numOrders][]int64
	free  []uint32
	lists [numLists]*blockList[uint32]
	tombs map[string]uint64 // revision of a deleted key's marker
	rev   uint64            // newest revision applied

	// Match sets of recent searches, as bitsets over slots. They depend on
	// the names only, so they stay valid until a destination is added or
	// removed. Guarded by cacheMu: pages are computed under a read lock.
	cacheMu  sync.Mutex
	searches map[string]matchSet
}

type matchSet struct {
	bits  []uint64
	count int
}

func newTable() *table {
	t := &table{slot: map[string]uint32{}, tombs: map[string]uint64{}, searches: map[string]matchSet{}}
	for _, o := range projection.Orders() {
		for _, back := range []bool{false, true} {
			t.lists[listOf(o, back)] = newBlockList(t.compare(o, back))
		}
	}
	return t
}

// compare orders slots as projection.Compare orders their states.
func (t *table) compare(o projection.Order, backwards bool) func(a, b uint32) int {
	return func(a, b uint32) int {
		var c int
		if o == projection.ByDestination {
			c = strings.Compare(t.names[a], t.names[b])
		} else {
			c = cmp.Compare(t.keys[o][a], t.keys[o][b])
		}
		if backwards {
			c = -c
		}
		if c != 0 {
			return c
		}
		return strings.Compare(t.names[a], t.names[b])
	}
}

func (t *table) get(name string) (*record, bool) {
	s, ok := t.slot[name]
	if !ok {
		return nil, false
	}
	return t.recs[s], true
}

// alloc returns a free slot for name.
func (t *table) alloc(name string) uint32 {
	var s uint32
	if n := len(t.free); n > 0 {
		s, t.free = t.free[n-1], t.free[:n-1]
	} else {
		s = uint32(len(t.recs))
		t.recs = append(t.recs, nil)
		t.names = append(t.names, "")
		t.lower = append(t.lower, "")
		for o := range t.keys {
			t.keys[o] = append(t.keys[o], 0)
		}
	}
	t.slot[name] = s
	t.names[s], t.lower[s] = name, projection.ToLowerASCII(name)
	t.namesChanged()
	return s
}

func (t *table) namesChanged() {
	t.cacheMu.Lock()
	clear(t.searches)
	t.cacheMu.Unlock()
}

// put stores a record; indexed says whether the lists are being kept (not
// during an initial load, which builds them at the end).
func (t *table) put(r *record, indexed bool) {
	st := r.state()
	name := st.Destination
	delete(t.tombs, name)
	s, had := t.slot[name]
	if !had {
		s = t.alloc(name)
	}
	t.recs[s] = r
	var changed [numOrders]bool
	for _, o := range projection.Orders()[1:] {
		k := projection.Key(st, o)
		if had && t.keys[o][s] == k {
			continue
		}
		if had && indexed {
			t.lists[listOf(o, false)].Delete(s)
			t.lists[listOf(o, true)].Delete(s)
		}
		t.keys[o][s], changed[o] = k, true
	}
	if !indexed {
		return
	}
	for _, o := range projection.Orders() {
		if !had || changed[o] {
			t.lists[listOf(o, false)].Insert(s)
			t.lists[listOf(o, true)].Insert(s)
		}
	}
}

func (t *table) remove(name string, rev uint64, indexed bool) {
	t.tombs[name] = rev
	s, had := t.slot[name]
	if !had {
		return
	}
	if indexed {
		for _, l := range t.lists {
			l.Delete(s)
		}
	}
	delete(t.slot, name)
	t.recs[s], t.names[s], t.lower[s] = nil, "", ""
	t.free = append(t.free, s)
	t.namesChanged()
}

// buildLists orders every slot at once (the end of an initial load).
func (t *table) buildLists() {
	all := make([]uint32, 0, len(t.slot))
	for _, s := range t.slot {
		all = append(all, s)
	}
	for _, l := range t.lists {
		l.build(all)
	}
}

// page answers a query (see Index.Page).
func (t *table) page(q projection.Query) projection.Page {
	l := t.lists[listOf(q.Order, q.Backwards)]
	m := projection.NewMatcher(q.Search)
	if m.All() {
		start, end := projection.Window(q.From, q.Limit, l.Len())
		out := make([]destination.State, 0, end-start)
		if end > start {
			l.Ascend(start, func(s uint32) bool {
				out = append(out, t.recs[s].state())
				return len(out) < end-start
			})
		}
		return projection.Page{Destinations: out, Total: l.Len()}
	}
	ms := t.matches(m)
	start, end := projection.Window(q.From, q.Limit, ms.count)
	out := make([]destination.State, 0, end-start)
	if end > start {
		n := 0
		l.Ascend(0, func(s uint32) bool {
			if ms.bits[s/64]&(1<<(s%64)) == 0 {
				return true
			}
			if n >= start {
				out = append(out, t.recs[s].state())
			}
			n++
			return n < end
		})
	}
	return projection.Page{Destinations: out, Total: ms.count}
}

// matches returns the slots whose names match, from the cache or a scan.
func (t *table) matches(m projection.Matcher) matchSet {
	key := m.String()
	t.cacheMu.Lock()
	ms, ok := t.searches[key]
	t.cacheMu.Unlock()
	if ok {
		return ms
	}
	ms.bits = make([]uint64, (len(t.lower)+63)/64)
	for s, name := range t.lower {
		if t.recs[s] != nil && m.Match(name) {
			ms.bits[s/64] |= 1 << (s % 64)
		}
	}
	for _, w := range ms.bits {
		ms.count += bits.OnesCount64(w)
	}
	t.cacheMu.Lock()
	if len(t.searches) >= maxCachedSearches {
		clear(t.searches)
	}
	t.searches[key] = ms
	t.cacheMu.Unlock()
	return ms
}
