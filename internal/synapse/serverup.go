package synapse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/streams"
)

// retryTimingsCache is the cache Synapse invalidates (on the caches
// stream) whenever a process changes a destination's retry timings.
const retryTimingsCache = "get_destination_retry_timings"

// Notifier publishes core NATS messages (a *nats.Conn).
type Notifier interface {
	Publish(subject string, data []byte) error
}

// ServerUpOptions are ServerUp's dependencies.
type ServerUpOptions struct {
	DB      *pgxpool.Pool
	NATS    Notifier
	Routing Routing
	Log     *slog.Logger
}

// ServerUp turns Synapse clearing a destination's backoff (an inbound
// request from it, or reset_connection through Synapse's admin API) into
// fedsender's server-up signal (streams.ServerUpSubject). Synapse announces
// every change of retry timings by invalidating get_destination_retry_timings
// for the destination on the caches stream, failures included, so the
// destination's row is read to see whether the backoff was cleared.
// REMOTE_SERVER_UP is not used: Synapse 1.92 also publishes it when it
// marks a server down.
type ServerUp struct {
	opts ServerUpOptions
	mu   sync.Mutex
	todo map[string]bool
	kick chan struct{}
}

// NewServerUp returns the signal; Run processes what Observe is given.
func NewServerUp(o ServerUpOptions) *ServerUp {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &ServerUp{opts: o, todo: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Streams is Synapse's caches stream.
func (s *ServerUp) Streams() []string { return []string{"caches"} }

// Observe takes caches rows ([cache name, keys, ts]) and queues the
// destinations whose retry timings changed. It does not block.
func (s *ServerUp) Observe(stream string, _ int64, row json.RawMessage) {
	var r []json.RawMessage
	if stream != "caches" || json.Unmarshal(row, &r) != nil || len(r) < 2 {
		return
	}
	var name string
	var keys []string
	if json.Unmarshal(r[0], &name) != nil || name != retryTimingsCache || json.Unmarshal(r[1], &keys) != nil {
		return
	}
	dests := s.opts.Routing.Filter(keys)
	if len(dests) == 0 {
		return
	}
	s.mu.Lock()
	for _, d := range dests {
		s.todo[d] = true
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run reads each queued destination's row and signals those whose
// backoff is cleared, until ctx ends.
func (s *ServerUp) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		s.mu.Lock()
		todo := s.todo
		s.todo = map[string]bool{}
		s.mu.Unlock()
		for d := range todo {
			if err := s.check(ctx, d); err != nil && ctx.Err() == nil {
				s.opts.Log.Warn("synapse feed: server-up signal", "destination", d, "error", err)
			}
		}
	}
}

func (s *ServerUp) check(ctx context.Context, dest string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var retryLastTS *int64
	err := s.opts.DB.QueryRow(ctx, "SELECT retry_last_ts FROM destinations WHERE destination = $1", dest).Scan(&retryLastTS)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("destinations: %w", err)
	}
	// Synapse's own test: no row, or retry_last_ts null or 0, is no backoff.
	if retryLastTS != nil && *retryLastTS != 0 {
		return nil
	}
	body, err := json.Marshal(map[string]string{"destination": dest})
	if err != nil {
		return err
	}
	s.opts.Log.Info("synapse feed: Synapse cleared a destination's backoff; waking it", "destination", dest)
	return s.opts.NATS.Publish(streams.ServerUpSubject, body)
}
