package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
)

// pgReadModel is the PostgreSQL read model (postgres.url set): the
// projector that writes the destinations table and the reader the admin
// surfaces answer from. Sending never waits for it: migrations and writes
// retry in the background while PostgreSQL is unreachable.
type pgReadModel struct {
	pool     *pgxpool.Pool
	schema   string
	proj     *pgprojection.Projector
	reader   *pgprojection.Reader
	migrated atomic.Bool
	log      *slog.Logger
}

// newPGReadModel opens a pool (lazily: nothing connects before run).
func newPGReadModel(ctx context.Context, js jetstream.JetStream, cfg config.PostgresConfig, origin string, log *slog.Logger) (*pgReadModel, error) {
	pool, err := pgprojection.Connect(ctx, cfg.URL, cfg.Schema)
	if err != nil {
		return nil, err
	}
	m := &pgReadModel{pool: pool, schema: cfg.Schema, log: log}
	m.proj = pgprojection.NewProjector(pgprojection.ProjectorOptions{JS: js, Pool: pool, Origin: origin, Log: log})
	m.reader = pgprojection.NewReader(pool, m, log)
	return m, nil
}

// Synced is the reader's condition: migrated, and the projector caught up.
func (m *pgReadModel) Synced() bool { return m.migrated.Load() && m.proj.Synced() }

// notReady says why the reader cannot answer.
func (m *pgReadModel) notReady() error {
	switch {
	case !m.migrated.Load():
		return errors.New("the PostgreSQL read model is not migrated yet (is PostgreSQL reachable?)")
	case !m.reader.Healthy():
		return errors.New("PostgreSQL cannot be read")
	}
	events, pdus := m.proj.Behind()
	return fmt.Errorf("the PostgreSQL read model is loading: %d destination events and %d PDUs behind", events, pdus)
}

// run migrates (retrying while PostgreSQL is down), then projects until ctx
// ends; it closes the pool when done.
func (m *pgReadModel) run(ctx context.Context) error {
	defer m.pool.Close()
	health := make(chan error, 1)
	go func() { health <- m.reader.Run(ctx) }()
	defer func() { <-health }()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		applied, err := pgprojection.Migrate(ctx, m.pool, m.schema)
		if err == nil {
			if len(applied) > 0 {
				m.log.Info("pgprojection: migrated", "schema", m.schema, "versions", applied)
			}
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("pgprojection: cannot migrate PostgreSQL; retrying", "in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	m.migrated.Store(true)
	return m.proj.Run(ctx)
}
