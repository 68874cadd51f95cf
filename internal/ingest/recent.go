package ingest

import (
	"sync"

	"github.com/fedsender/fedsender/streams"
)

// RecentWindow is how long RecentEvents remembers an event: Synapse sends
// a receipt for an event younger than this to every server at once.
const RecentWindow = 60_000 // ms

// maxRecent bounds the events remembered (about 7 MB): past it, the oldest
// are forgotten early, and a receipt for one of them is paced as for an
// older event.
const maxRecent = 100_000

// RecentEvents remembers the events the PDU reader read in the last
// minute, by the stream time of their PDU: the EDU reader asks it whether
// a receipt is for a recent event. The PDU reader adds, the EDU reader
// asks, from their own goroutines.
type RecentEvents struct {
	mu    sync.Mutex
	at    map[string]int64
	order []recentEvent // oldest first, from head
	head  int
}

type recentEvent struct {
	id string
	ts int64
}

// NewRecentEvents returns an empty memory.
func NewRecentEvents() *RecentEvents { return &RecentEvents{at: map[string]int64{}} }

// add records a batch of PDUs and forgets those past the window.
func (r *RecentEvents) add(items []streams.Item, now int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		r.at[it.PDU.EventID] = it.TS
		r.order = append(r.order, recentEvent{it.PDU.EventID, it.TS})
	}
	for r.head < len(r.order) && (now-r.order[r.head].ts > RecentWindow || len(r.order)-r.head > maxRecent) {
		if e := r.order[r.head]; r.at[e.id] == e.ts {
			delete(r.at, e.id)
		}
		r.head++
	}
	if r.head > len(r.order)/2 {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
}

// Recent reports whether the event's PDU was read within the window
// before now.
func (r *RecentEvents) Recent(eventID string, now int64) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ts, ok := r.at[eventID]
	return ok && now-ts <= RecentWindow
}
