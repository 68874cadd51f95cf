package synapse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/streams"
)

// MessageBuilder turns a validated envelope into the message the feed
// publishes; *streams.Publisher is one.
type MessageBuilder interface {
	Message(ctx context.Context, envelope []byte) (*nats.Msg, error)
}

// EDUDeps is what every EDU source needs.
type EDUDeps struct {
	// DB is Synapse's database.
	DB *pgxpool.Pool
	// Routing is the last filter of every destination list; its
	// ServerName is Synapse's server name, which says who is local.
	Routing Routing
	// Messages builds the envelopes' messages (streams.NewPublisher(js)).
	Messages MessageBuilder
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now (presence's last_active_ago is computed
	// from it).
	Now func() time.Time
	// BatchSize bounds the rows one Next reads (default 500).
	BatchSize int
	// ShareDeviceNames is Synapse's
	// allow_device_name_lookup_over_federation (default false): whether
	// device-list updates carry device_display_name.
	ShareDeviceNames bool
}

func (d EDUDeps) withDefaults() (EDUDeps, error) {
	switch {
	case d.DB == nil:
		return d, errors.New("synapse: EDU source without a database")
	case d.Messages == nil:
		return d, errors.New("synapse: EDU source without a message builder")
	case d.Routing.ServerName == "":
		return d, errors.New("synapse: EDU source without a server name")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.BatchSize <= 0 {
		d.BatchSize = 500
	}
	return d, nil
}

// isLocal reports whether a user id belongs to our server.
func (d EDUDeps) isLocal(userID string) bool {
	return serverOf(userID) == servername.Normalize(d.Routing.ServerName)
}

// serverOf returns the server part of a user id (or of a member event's
// state key), normalised; "" if it has none.
func serverOf(userID string) string {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return ""
	}
	return servername.Normalize(server)
}

// outgoing is one EDU envelope a source publishes.
type outgoing struct {
	Type         string
	Content      any
	Destinations []string
	// Key is the coalescing key, when the pipeline's default for the type
	// is not the right one.
	Key string
	// ID, when set, is the Nats-Msg-Id, so that a replay after a crash is
	// dropped by JetStream.
	ID string
	// Source, when set, is the HeaderSource.
	Source string
}

// message builds the message of one EDU envelope.
func (d EDUDeps) message(ctx context.Context, e outgoing) (*nats.Msg, error) {
	raw, err := json.Marshal(e.Content)
	if err != nil {
		return nil, fmt.Errorf("synapse: %s content: %w", e.Type, err)
	}
	envelope, err := json.Marshal(streams.EDUEnvelope{EDUType: e.Type, Content: raw, Destinations: e.Destinations, Key: e.Key})
	if err != nil {
		return nil, err
	}
	msg, err := d.Messages.Message(ctx, envelope)
	if err != nil {
		return nil, fmt.Errorf("synapse: %s for %v: %w", e.Type, e.Destinations, err)
	}
	if e.ID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, e.ID)
	}
	if e.Source != "" {
		msg.Header.Set(HeaderSource, e.Source)
	}
	return msg, nil
}

// streamPosition is how far a Synapse stream is safe to read: the minimum
// over its writers' rows in stream_positions (Synapse's
// MultiWriterIdGenerator keeps one row per writer, in the transaction that
// persists; a row below another writer's means that writer may still
// commit ids in between). ok is false when the stream has no row there (a
// single-writer stream, or nothing written yet).
func streamPosition(ctx context.Context, db *pgxpool.Pool, stream string) (pos int64, ok bool, err error) {
	var min *int64
	err = db.QueryRow(ctx, `SELECT min(stream_id) FROM stream_positions WHERE stream_name = $1`, stream).Scan(&min)
	if err != nil {
		return 0, false, fmt.Errorf("synapse: stream_positions for %s: %w", stream, err)
	}
	if min == nil {
		return 0, false, nil
	}
	return *min, true, nil
}

// maxOf returns max(column) of a table, 0 when it is empty.
func maxOf(ctx context.Context, db *pgxpool.Pool, table, column string) (int64, error) {
	var max int64
	err := db.QueryRow(ctx, `SELECT coalesce(max(`+pgx.Identifier{column}.Sanitize()+`), 0) FROM `+
		pgx.Identifier{table}.Sanitize()).Scan(&max)
	if err != nil {
		return 0, fmt.Errorf("synapse: max %s of %s: %w", column, table, err)
	}
	return max, nil
}

// NewEDUSources returns every EDU source of Synapse's sender: to-device,
// device lists and signing keys, receipts, presence, typing.
func NewEDUSources(deps EDUDeps) ([]Source, error) {
	var out []Source
	for _, build := range []func(EDUDeps) (Source, error){
		func(d EDUDeps) (Source, error) { return NewToDevice(d) },
		func(d EDUDeps) (Source, error) { return NewDeviceLists(d) },
		func(d EDUDeps) (Source, error) { return NewReceipts(d) },
		func(d EDUDeps) (Source, error) { return NewPresence(d) },
		func(d EDUDeps) (Source, error) { return NewTyping(d) },
	} {
		s, err := build(deps)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
