package resolve

import "sync"

// flight makes concurrent resolutions of one name share a single lookup.
// Unlike golang.org/x/sync/singleflight it runs the lookup in its own
// goroutine, so every caller (the first included) can give up when its own
// context ends while the lookup finishes for the others and fills the cache.
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done    chan struct{} // closed when target and err are set
	target  Target
	err     error
	waiters int
}

// join returns the running call for key, or starts fn as a new one.
func (f *flight) join(key string, fn func() (Target, error)) *call {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[key]; ok {
		c.waiters++
		return c
	}
	if f.calls == nil {
		f.calls = make(map[string]*call)
	}
	c := &call{done: make(chan struct{}), waiters: 1}
	f.calls[key] = c
	go func() {
		c.target, c.err = fn()
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	return c
}

// waiters reports how many callers share the running call for key.
func (f *flight) waiters(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[key]; ok {
		return c.waiters
	}
	return 0
}
