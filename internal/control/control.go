// Package control carries operators' commands to the owner of a
// destination, over core NATS: the owner of partition p subscribes to
// streams.ControlResetSubject(p), and any replica (the HTTP admin API, the
// NATS micro service) that is asked to reset a destination sends the
// command there and waits for the owner's acknowledgement.
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
	"time"

	"github.com/nats-io/nats.go"

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

// reply is the owner's answer: {} when done, else the reason.
type reply struct {
	Error string `json:"error,omitempty"`
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

// Reset asks the owner of dest to clear its retry timings and wake it. It
// returns once the owner has taken the command; while no owner listens it
// tries again until ctx ends, then returns ErrNoOwner.
func (c *Client) Reset(ctx context.Context, dest string) error {
	if err := servername.Validate(dest); err != nil {
		return fmt.Errorf("control: reset: %w", err)
	}
	p := streams.Partition(dest, c.partitions)
	body, err := json.Marshal(resetCommand{Destination: dest})
	if err != nil {
		return fmt.Errorf("control: reset %s: %w", dest, err)
	}
	msg, err := c.request(ctx, streams.ControlResetSubject(p), body)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w %d (destination %s)", ErrNoOwner, p, dest)
	}
	if err != nil {
		return fmt.Errorf("control: reset %s: %w", dest, err)
	}
	var r reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return fmt.Errorf("control: reset %s: the owner answered %q: %w", dest, msg.Data, err)
	}
	if r.Error != "" {
		return fmt.Errorf("%w: reset %s: %s", ErrRefused, dest, r.Error)
	}
	return nil
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
	// Reset performs a reset in the owner (hands it to the supervisor).
	Reset func(ctx context.Context, dest string) error
	// ServerUp, if set, takes the homeserver's signal that dest is up, for
	// a destination of an owned partition (normalised).
	ServerUp func(dest string)
	Log      *slog.Logger
}

// serverUp is the body of a server_up signal.
type serverUp struct {
	Destination string `json:"destination"`
}

// Serve takes the commands for the owned partitions until ctx ends, then
// returns nil. It returns an error if it cannot subscribe. Each owned
// partition has its own subscription (so a partition without an owner
// answers "no responders" at once), all feeding one goroutine.
func Serve(ctx context.Context, opts ServerOptions) error {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	msgs := make(chan *nats.Msg, 256)
	subs := make([]*nats.Subscription, 0, len(opts.Owned))
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	for _, p := range opts.Owned {
		sub, err := opts.NC.ChanSubscribe(streams.ControlResetSubject(p), msgs)
		if err != nil {
			return fmt.Errorf("control: subscribe %s: %w", streams.ControlResetSubject(p), err)
		}
		subs = append(subs, sub)
	}
	ups := make(chan *nats.Msg, 1024)
	if opts.ServerUp != nil {
		sub, err := opts.NC.ChanSubscribe(streams.ServerUpSubject, ups)
		if err != nil {
			return fmt.Errorf("control: subscribe %s: %w", streams.ServerUpSubject, err)
		}
		subs = append(subs, sub)
	}
	owned := make(map[int]bool, len(opts.Owned))
	for _, p := range opts.Owned {
		owned[p] = true
	}
	// The subscriptions are in place once the server has seen them.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := opts.NC.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("control: subscribe: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			p, err := streams.PartitionFromControlSubject(m.Subject)
			if err != nil {
				continue // cannot happen: only our subjects are subscribed
			}
			respond(m, handleReset(ctx, opts, p, m.Data))
		case m := <-ups:
			handleServerUp(opts, owned, m.Data)
		}
	}
}

// handleServerUp passes on a server_up signal for a destination this
// replica owns; anything else is ignored (an invalid one logged).
func handleServerUp(opts ServerOptions, owned map[int]bool, data []byte) {
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
	if owned[streams.Partition(dest, opts.Partitions)] {
		opts.ServerUp(dest)
	}
}

// handleReset checks and performs one reset command of partition p.
func handleReset(ctx context.Context, opts ServerOptions, p int, data []byte) error {
	var cmd resetCommand
	if err := json.Unmarshal(data, &cmd); err != nil {
		return fmt.Errorf("not a reset command: %v", err)
	}
	if err := servername.Validate(cmd.Destination); err != nil {
		return err
	}
	if got := streams.Partition(cmd.Destination, opts.Partitions); got != p {
		return fmt.Errorf("destination %s is in partition %d, not %d", cmd.Destination, got, p)
	}
	if err := opts.Reset(ctx, cmd.Destination); err != nil {
		return err
	}
	opts.Log.Info("reset command taken", "destination", cmd.Destination, "partition", p)
	return nil
}

func respond(m *nats.Msg, err error) {
	var r reply
	if err != nil {
		r.Error = err.Error()
	}
	body, _ := json.Marshal(r) // a plain struct
	m.Respond(body)
}
