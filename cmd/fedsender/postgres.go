package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection"
)

// postgresConfig loads --config and requires postgres.url.
func postgresConfig(name string, args []string) (config.Config, error) {
	fs := newFlags(name)
	path := fs.String("config", "", "YAML configuration file (required): postgres.url and postgres.schema")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if *path == "" {
		return config.Config{}, errors.New("--config is required")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return config.Config{}, err
	}
	if cfg.Postgres.URL == "" {
		return config.Config{}, errors.New("postgres.url is empty: there is no PostgreSQL read model")
	}
	return cfg, nil
}

// migrate is `fedsender migrate`: create or upgrade the PostgreSQL schema.
func migrate(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := postgresConfig("migrate", args)
	if err != nil {
		return err
	}
	pool, err := pgprojection.Connect(ctx, cfg.Postgres.URL, cfg.Postgres.Schema)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := pgprojection.Migrate(ctx, pool, cfg.Postgres.Schema)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema %s: applied migrations %v\n", cfg.Postgres.Schema, applied)
	return nil
}

// projectionCmd is `fedsender projection rebuild`: empty the PostgreSQL read
// model and delete its consumer, so that the running service (or the next
// start) projects the whole event log again.
func projectionCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "rebuild" {
		return errors.New("usage: fedsender projection rebuild --config FILE")
	}
	cfg, err := postgresConfig("projection rebuild", args[1:])
	if err != nil {
		return err
	}
	nc, js, err := connectJetStream(cfg, "fedsender projection rebuild")
	if err != nil {
		return err
	}
	defer nc.Close()
	pool, err := pgprojection.Connect(ctx, cfg.Postgres.URL, cfg.Postgres.Schema)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pgprojection.Migrate(ctx, pool, cfg.Postgres.Schema); err != nil {
		return err
	}
	if err := pgprojection.Rebuild(ctx, js, pool); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema %s: emptied; the projector reads the event log, the offsets and the PDU stream again\n", cfg.Postgres.Schema)
	return nil
}
