package service

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/control"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/ingest"
	"github.com/fedsender/fedsender/internal/ownership"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/projection/kvprojection"
	"github.com/fedsender/fedsender/internal/projection/roomindex"
	"github.com/fedsender/fedsender/streams"
)

// readModel is the admin surfaces' read model: the projector that keeps the
// fedsender-destinations bucket, this replica's index of it, and the rooms
// of each destination. Every replica runs all three (the projector's writes
// are compare-and-swap merges). With postgres.url set, the destinations
// and their rooms are answered from PostgreSQL instead (pg), and there is
// no in-memory rooms index; the bucket is still kept.
type readModel struct {
	index *kvprojection.Index
	proj  *kvprojection.Projector
	rooms admin.Rooms
	// roomIndex is the in-memory rooms index; nil with PostgreSQL.
	roomIndex *roomindex.Index
	pg        *pgReadModel // nil without postgres.url
}

// newReadModel returns the read model; the PDU reader resumes after
// sequence readerFrom, and the rooms index reads what comes before.
func newReadModel(ctx context.Context, js jetstream.JetStream, cfg config.Config, readerFrom uint64, log *slog.Logger) (*readModel, error) {
	var pg *pgReadModel
	if cfg.Postgres.URL != "" {
		var err error
		if pg, err = newPGReadModel(ctx, js, cfg.Postgres, cfg.ServerName, log); err != nil {
			return nil, err
		}
	}
	idx := kvprojection.NewIndex(js, log)
	m := &readModel{
		pg:    pg,
		index: idx,
		proj: kvprojection.NewProjector(kvprojection.ProjectorOptions{
			JS: js, Index: idx, Log: log,
			Bucket: streams.DestinationBucketConfig(streams.Options{Replicas: cfg.NATS.Replicas}),
		}),
	}
	if pg != nil {
		m.rooms = pg.reader
	} else {
		m.roomIndex = roomindex.New(roomindex.Options{JS: js, Through: readerFrom, Origin: cfg.ServerName, Log: log})
		m.rooms = m.roomIndex
	}
	return m, nil
}

// observer is what the PDU reader shows each batch to: the rooms index,
// or nothing with PostgreSQL (its projector reads the stream itself).
func (m *readModel) observer() ingest.Observer {
	if m.roomIndex == nil {
		return nil
	}
	return m.roomIndex
}

// start runs the read model's parts with the service's runner.
func (m *readModel) start(run func(name string, f func(context.Context) error)) {
	run("read model index", m.index.Run)
	run("read model projector", m.proj.Run)
	if m.roomIndex != nil {
		run("rooms index", m.roomIndex.Run)
	}
	if m.pg != nil {
		run("postgres read model", m.pg.run)
	}
}

// Get is admin.Reader's: one destination from PostgreSQL or the index.
func (m *readModel) Get(name string) (destination.State, bool) {
	if m.pg != nil {
		return m.pg.reader.Get(name)
	}
	return m.index.Get(name)
}

// Page is admin.Reader's: one page of the list from PostgreSQL or the index.
func (m *readModel) Page(q projection.Query) projection.Page {
	if m.pg != nil {
		return m.pg.reader.Page(q)
	}
	return m.index.Page(q)
}

// Sync is admin.Reader's: the index catches up with the bucket (nothing
// to wait for with PostgreSQL, whose tables every replica reads).
func (m *readModel) Sync(ctx context.Context) error {
	if m.pg != nil {
		return m.pg.reader.Sync(ctx)
	}
	return m.index.Sync(ctx)
}

// EventSeq is admin.Reader's: the event-log sequence a destination is
// shown as of.
func (m *readModel) EventSeq(ctx context.Context, name string) (uint64, error) {
	if m.pg != nil {
		return m.pg.reader.EventSeq(ctx, name)
	}
	return m.index.EventSeq(ctx, name)
}

// Ready reports whether the index shows at least everything the projector
// found at start (with PostgreSQL: whether its reader can answer).
func (m *readModel) Ready() bool {
	if m.pg != nil {
		return m.pg.reader.Ready()
	}
	synced, rev := m.proj.Synced()
	return synced && m.index.Ready() && m.index.Revision() >= rev
}

// errReadModelLoading is /readyz's reason while the read model loads.
var errReadModelLoading = errors.New("the read model is still loading")

// notReady is /readyz's reason while the read model cannot answer; with
// PostgreSQL it says how far behind the projector is.
func (m *readModel) notReady() error {
	if m.Ready() {
		return nil
	}
	if m.pg == nil {
		return errReadModelLoading
	}
	return m.pg.notReady()
}

// startCommands runs the owner's listener for reset commands (for the
// partitions this replica owns, which the returned server is told of) and
// the NATS micro service, and returns the Resetter the HTTP admin API
// uses: both surfaces send resets to the partition's owner over NATS.
func startCommands(run func(string, func(context.Context) error), nc *nats.Conn, partitions int,
	local resetter, proj *readModel, owners admin.Owners, log *slog.Logger) (*control.Server, admin.Resetter) {
	srv := control.NewServer(control.ServerOptions{NC: nc, Partitions: partitions, Reset: local.Reset,
		ServerUp: local.ServerUp, Log: log})
	run("control", srv.Run)
	client := control.NewClient(nc, partitions)
	run("admin micro service", func(ctx context.Context) error {
		return admin.ServeMicro(ctx, nc, admin.Options{Reader: proj, Rooms: proj.rooms, Resetter: client, Owners: owners, Log: log})
	})
	return srv, client
}

// leaseOwners reads the partitions' owners from the lease bucket.
type leaseOwners struct {
	js jetstream.JetStream
	n  int
}

func (o leaseOwners) Owners(ctx context.Context) ([]ownership.PartitionOwner, error) {
	return ownership.Owners(ctx, o.js, o.n)
}
