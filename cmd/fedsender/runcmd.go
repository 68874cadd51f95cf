package main

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

func loadConfig(path string) (config.Config, error) {
	return config.Load(path, os.Environ())
}

func runService(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run")
	path := fs.String("config", "", "YAML configuration file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("--config is required")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Level, cfg.Log.Format, stderr)
	// Libraries that log through slog's default logger (the actor engine)
	// or the standard log package then write fedsender's format too.
	slog.SetDefault(log)
	log.Info("configuration loaded", "config", cfg)
	if err := service.Run(ctx, cfg, service.Deps{Log: log}); err != nil {
		log.Error("fedsender failed", "error", err)
		return loggedError{err}
	}
	return nil
}

// loggedError is an error already written to the log, which main must not
// print again (as plain text, among JSON records).
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

func encodePublic(k xmatrix.SigningKey) string {
	return base64.RawStdEncoding.EncodeToString(k.Public())
}
