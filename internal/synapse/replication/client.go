package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/redact"
)

// Options configure a Client. The On* callbacks run on the client's
// goroutine, in the order Synapse published the lines; nil ones are not
// called.
type Options struct {
	// URL is Synapse's Redis (redis://, rediss:// or unix://).
	URL string
	// Channel is the pub/sub channel: Synapse's server name.
	Channel string
	// OnRow receives every RDATA row. Rows of a batch arrive together,
	// once the row closing the batch arrived, all with its token.
	OnRow func(Row)
	// OnPosition receives every POSITION command.
	OnPosition func(Position)
	// OnRemoteServerUp receives every REMOTE_SERVER_UP command.
	OnRemoteServerUp func(RemoteServerUp)
	// OnState is told when the subscription comes up (true) and goes
	// down (false); rows may have been missed while it was down.
	OnState func(up bool)
	// Log reports connection changes and lines that are not understood.
	Log *slog.Logger
	// MaxBackoff caps the wait between reconnection attempts (default
	// 10 s; the first wait is 100 ms).
	MaxBackoff time.Duration
}

// Client is a subscriber to Synapse's replication channel.
type Client struct {
	opts   Options
	redis  *redis.Client
	up     atomic.Bool
	recent recentLines
	// batches holds the rows of open batches, per stream and instance.
	batches map[[2]string][]Row
}

// New returns a client for opts; it connects when Run is called.
func New(opts Options) (*Client, error) {
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("replication: Redis URL %s: %w", redact.URL(opts.URL), err)
	}
	if opts.Channel == "" {
		return nil, errors.New("replication: no channel (Synapse's server name)")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	// A dead connection must be noticed soon: the feed polls meanwhile.
	ro.DialTimeout = 5 * time.Second
	return &Client{opts: opts, redis: redis.NewClient(ro), batches: map[[2]string][]Row{}}, nil
}

// Up reports whether the client is subscribed now.
func (c *Client) Up() bool { return c.up.Load() }

// Run subscribes and dispatches lines until ctx ends, reconnecting with
// backoff whenever Redis is unreachable. It returns nil when ctx ends.
func (c *Client) Run(ctx context.Context) error {
	defer c.redis.Close()
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		subscribed, err := c.listen(ctx)
		c.setUp(false)
		if ctx.Err() != nil {
			return nil
		}
		if subscribed {
			wait = 100 * time.Millisecond
		}
		c.opts.Log.Warn("synapse replication: Redis unreachable; polling Synapse's database meanwhile",
			"channel", c.opts.Channel, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, c.opts.MaxBackoff)
	}
	return nil
}

// listen subscribes once and dispatches until the connection fails;
// subscribed tells whether the subscription was confirmed.
func (c *Client) listen(ctx context.Context) (subscribed bool, err error) {
	ps := c.redis.Subscribe(ctx, c.opts.Channel)
	defer ps.Close()
	// A blocked read does not watch ctx: closing the connection ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	// Rows of a batch interrupted by a reconnection are lost with it: the
	// database has them.
	clear(c.batches)
	for {
		msg, err := ps.ReceiveTimeout(ctx, 15*time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				// Quiet channel: make sure the connection is alive.
				if err := ps.Ping(ctx); err != nil {
					return subscribed, err
				}
				continue
			}
			return subscribed, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscribed = true
				c.setUp(true)
				c.opts.Log.Info("synapse replication: subscribed", "channel", c.opts.Channel)
			}
		case *redis.Message:
			c.handle(m.Payload)
		}
	}
}

func (c *Client) setUp(up bool) {
	if c.up.Swap(up) != up && c.opts.OnState != nil {
		c.opts.OnState(up)
	}
}

// handle parses one line and calls its callback. A line repeated within a
// second is dropped: Synapse publishes some lines twice.
func (c *Client) handle(line string) {
	if c.recent.seen(line, time.Now()) {
		return
	}
	cmd, batch, err := parse(line)
	if err != nil {
		c.opts.Log.Warn("synapse replication: line ignored", "error", err)
		return
	}
	switch cmd := cmd.(type) {
	case Row:
		key := [2]string{cmd.Stream, cmd.Instance}
		if batch {
			c.batches[key] = append(c.batches[key], cmd)
			return
		}
		rows := append(c.batches[key], cmd)
		delete(c.batches, key)
		if c.opts.OnRow != nil {
			for _, r := range rows {
				r.Token = cmd.Token
				c.opts.OnRow(r)
			}
		}
	case Position:
		if c.opts.OnPosition != nil {
			c.opts.OnPosition(cmd)
		}
	case RemoteServerUp:
		if c.opts.OnRemoteServerUp != nil {
			c.opts.OnRemoteServerUp(cmd)
		}
	}
}

// recentLines remembers the last lines received, to drop repeats.
type recentLines struct {
	lines [64]string
	at    [64]time.Time
	next  int
}

// dupWindow is how close together two identical lines must be to count as
// one (Synapse's repeats come within the same millisecond).
const dupWindow = 50 * time.Millisecond

func (r *recentLines) seen(line string, now time.Time) bool {
	for i := range r.lines {
		if r.lines[i] == line && now.Sub(r.at[i]) < dupWindow {
			return true
		}
	}
	r.lines[r.next], r.at[r.next] = line, now
	r.next = (r.next + 1) % len(r.lines)
	return false
}
