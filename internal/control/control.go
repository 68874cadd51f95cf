// Package control carries operators' commands to the owner of a
// destination, over core NATS: the owner of partition p subscribes to
// streams.ControlResetSubject(p), and any replica (the HTTP admin API, the
// NATS micro service) that is asked to reset a destination sends the
// command there and waits for the owner's answer: the event-log sequence
// through which the reset is durable, so that the caller can wait for its
// read model to show it before it answers (read-your-writes).
//
// The homeserver's "server is up" signal (streams.ServerUpSubject, Synapse's
// REMOTE_SERVER_UP) is heard by every replica, not a queue group: each acts
// only for the destinations of the partitions it owns.
//
// Only the partition number is in the subject; the destination travels in
// the JSON body, and the owner checks that it is a valid server name of that
// partition, so no server name can steer a command to another subject or
// another destination.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/streams"
)

var (
	// ErrNoOwner: no replica listens for the destination's partition.
	ErrNoOwner = errors.New("control: no owner listens for the partition")
	// ErrRefused: the owner refused the command (the text says why).
	ErrRefused = errors.New("control: the owner refused the command")
)

// resetCommand is the body of a reset command.
type resetCommand struct {
	Destination string `json:"destination"`
}

// reply is the owner's answer: the event-log sequence through which the
// reset is durable, or why it was not done; not_failing when the
// destination is not backing off (there was nothing to reset).
type reply struct {
	Seq        uint64 `json:"seq,omitempty"`
	NotFailing bool   `json:"not_failing,omitempty"`
	Error      string `json:"error,omitempty"`
	// Moved: the replica no longer owns the partition (it is moving to
	// another); the command was not done, and the sender tries again.
	Moved bool `json:"moved,omitempty"`
}

// Client sends commands to owners.
type Client struct {
	nc         *nats.Conn
	partitions int
}

// NewClient returns a client for a deployment of the given partition count.
func NewClient(nc *nats.Conn, partitions int) *Client {
	return &Client{nc: nc, partitions: partitions}
}

// Reset asks the owner of dest to clear its retry timings and wake it, and
// returns the event-log sequence through which the reset is durable, once
// it is. A destination that is not backing off is not reset:
// destination.ErrNotFailing. While no owner listens it tries again until
// ctx ends, then returns ErrNoOwner.
func (c *Client) Reset(ctx context.Context, dest string) (uint64, error) {
	if err := servername.Validate(dest); err != nil {
		return 0, fmt.Errorf("control: reset: %w", err)
	}
	p := streams.Partition(dest, c.partitions)
	body, err := json.Marshal(resetCommand{Destination: dest})
	if err != nil {
		return 0, fmt.Errorf("control: reset %s: %w", dest, err)
	}
	var r reply
	for {
		msg, err := c.request(ctx, streams.ControlResetSubject(p), body)
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("%w %d (destination %s)", ErrNoOwner, p, dest)
		}
		if err != nil {
			return 0, fmt.Errorf("control: reset %s: %w", dest, err)
		}
		r = reply{}
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			return 0, fmt.Errorf("control: reset %s: the owner answered %q: %w", dest, msg.Data, err)
		}
		if !r.Moved {
			break
		}
		// The partition is moving: its next owner takes the command.
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w %d (destination %s): it is moving between replicas", ErrNoOwner, p, dest)
		case <-time.After(noOwnerRetry):
		}
	}
	switch {
	case r.NotFailing:
		return 0, fmt.Errorf("control: reset %s: %w", dest, destination.ErrNotFailing)
	case r.Error != "":
		return 0, fmt.Errorf("%w: reset %s: %s", ErrRefused, dest, r.Error)
	case r.Seq == 0:
		return 0, fmt.Errorf("%w: reset %s: the owner answered no event-log sequence", ErrRefused, dest)
	}
	return r.Seq, nil
}

// noOwnerRetry is the pause between tries while no owner listens: an owner
// may be starting, or a partition moving between replicas.
const noOwnerRetry = 50 * time.Millisecond

// request sends a command, trying again while no owner listens, until ctx
// ends (then the last error is returned).
func (c *Client) request(ctx context.Context, subject string, body []byte) (*nats.Msg, error) {
	for {
		msg, err := c.nc.RequestWithContext(ctx, subject, body)
		if !errors.Is(err, nats.ErrNoResponders) {
			return msg, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(noOwnerRetry):
		}
	}
}

// ServerOptions configure Serve.
type ServerOptions struct {
	NC *nats.Conn
	// Owned are the partitions this replica owns; Partitions is how many
	// there are in all.
	Owned      []int
	Partitions int
	// Reset performs a reset in the owner and returns the event-log
	// sequence through which it is durable, or destination.ErrNotFailing.
	Reset func(ctx context.Context, dest string) (uint64, error)
	Log   *slog.Logger
	// ServerUp, if set, takes the homeserver's signal that dest is up, for
	// a destination of an owned partition (normalised).
	ServerUp func(dest string)
}

// serverUp is the body of a server_up signal.
type serverUp struct {
	Destination string `json:"destination"`
}

// Serve takes the commands for the partitions opts.Owned until ctx ends,
// then returns nil (NewServer and Server.Run, for a fixed set of
// partitions).
func Serve(ctx context.Context, opts ServerOptions) error {
	return NewServer(opts).Run(ctx)
}

// Server takes the commands for the partitions this replica owns, which
// change as partitions move between replicas (Own, Disown).
type Server struct {
	opts ServerOptions
	msgs chan *nats.Msg

	mu    sync.Mutex
	subs  map[int]*nats.Subscription
	owned map[int]bool
}

// NewServer returns a Server for opts; it owns opts.Owned once it runs.
func NewServer(opts ServerOptions) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, msgs: make(chan *nats.Msg, 256), subs: map[int]*nats.Subscription{}, owned: map[int]bool{}}
}

// Own subscribes to partition p's commands and returns once the server
// has seen the subscription.
func (s *Server) Own(ctx context.Context, p int) error {
	s.mu.Lock()
	if s.subs[p] != nil {
		s.mu.Unlock()
		return nil
	}
	sub, err := s.opts.NC.ChanSubscribe(streams.ControlResetSubject(p), s.msgs)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("control: subscribe %s: %w", streams.ControlResetSubject(p), err)
	}
	s.subs[p], s.owned[p] = sub, true
	s.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.opts.NC.FlushWithContext(fctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("control: subscribe: %w", err)
	}
	return nil
}

// Disown stops taking partition p's commands (and server_up signals for
// its destinations): another replica owns it now, or will.
func (s *Server) Disown(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub := s.subs[p]; sub != nil {
		sub.Unsubscribe()
	}
	delete(s.subs, p)
	delete(s.owned, p)
}

func (s *Server) owns(p int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[p]
}

// Run takes the commands until ctx ends, then returns nil. It returns an
// error if it cannot subscribe. Each owned partition has its own
// subscription (so a partition without an owner answers "no responders"
// at once), all feeding one goroutine, which serves each command in a
// goroutine of its own.
func (s *Server) Run(ctx context.Context) error {
	opts := s.opts
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for p, sub := range s.subs {
			sub.Unsubscribe()
			delete(s.subs, p)
			delete(s.owned, p)
		}
	}()
	for _, p := range opts.Owned {
		if err := s.Own(ctx, p); err != nil {
			return err
		}
	}
	ups := make(chan *nats.Msg, 1024)
	if opts.ServerUp != nil {
		sub, err := opts.NC.ChanSubscribe(streams.ServerUpSubject, ups)
		if err != nil {
			return fmt.Errorf("control: subscribe %s: %w", streams.ServerUpSubject, err)
		}
		defer sub.Unsubscribe()
		// The subscription is in place once the server has seen it.
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = opts.NC.FlushWithContext(fctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("control: subscribe: %w", err)
		}
	}
	// Each command waits for its reset to be stored: serve them side by
	// side, so that one slow command does not hold up the others.
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-s.msgs:
			p, err := streams.PartitionFromControlSubject(m.Subject)
			if err != nil {
				continue // cannot happen: only our subjects are subscribed
			}
			if !s.owns(p) {
				// Taken before Disown, answered after: the sender asks
				// the partition's next owner.
				body, _ := json.Marshal(reply{Moved: true}) // a plain struct
				m.Respond(body)
				continue
			}
			wg.Go(func() {
				seq, err := handleReset(ctx, opts, p, m.Data)
				respond(m, seq, err)
			})
		case m := <-ups:
			handleServerUp(opts, s.owns, m.Data)
		}
	}
}

// handleServerUp passes on a server_up signal for a destination this
// replica owns; anything else is ignored (an invalid one logged).
func handleServerUp(opts ServerOptions, owns func(int) bool, data []byte) {
	var up serverUp
	if err := json.Unmarshal(data, &up); err != nil || up.Destination == "" {
		opts.Log.Warn("ignored a server_up signal: want {\"destination\": \"server name\"}", "subject", streams.ServerUpSubject, "body_bytes", len(data))
		return
	}
	if err := servername.Validate(up.Destination); err != nil {
		opts.Log.Warn("ignored a server_up signal", "subject", streams.ServerUpSubject, "error", err)
		return
	}
	dest := servername.Normalize(up.Destination)
	if owns(streams.Partition(dest, opts.Partitions)) {
		opts.ServerUp(dest)
	}
}

// handleReset checks and performs one reset command of partition p.
func handleReset(ctx context.Context, opts ServerOptions, p int, data []byte) (uint64, error) {
	var cmd resetCommand
	if err := json.Unmarshal(data, &cmd); err != nil {
		return 0, fmt.Errorf("not a reset command: %v", err)
	}
	if err := servername.Validate(cmd.Destination); err != nil {
		return 0, err
	}
	if got := streams.Partition(cmd.Destination, opts.Partitions); got != p {
		return 0, fmt.Errorf("destination %s is in partition %d, not %d", cmd.Destination, got, p)
	}
	ctx, cancel := context.WithTimeout(ctx, ownerTimeout)
	defer cancel()
	seq, err := opts.Reset(ctx, cmd.Destination)
	if err != nil {
		return 0, err
	}
	opts.Log.Info("reset done", "destination", cmd.Destination, "partition", p, "event_sequence", seq)
	return seq, nil
}

// ownerTimeout bounds the owner's work on one command (the reset event
// must be stored): past it the caller has given up anyway.
const ownerTimeout = 5 * time.Second

func respond(m *nats.Msg, seq uint64, err error) {
	r := reply{Seq: seq}
	switch {
	case errors.Is(err, destination.ErrNotFailing):
		r.NotFailing = true
	case err != nil:
		r.Error = err.Error()
	}
	body, _ := json.Marshal(r) // a plain struct
	m.Respond(body)
}
