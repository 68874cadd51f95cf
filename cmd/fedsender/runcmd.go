package main

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
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
	log.Info("configuration loaded", "config", cfg)
	return service.Run(ctx, cfg, service.Deps{Log: log})
}

func encodePublic(k xmatrix.SigningKey) string {
	return base64.RawStdEncoding.EncodeToString(k.Public())
}
