package main

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/redact"
	"github.com/fedsender/fedsender/internal/service"
)

// commandNATS is what a command connects with: --server alone (no
// configuration file needed), else the configuration file's nats section,
// else $NATS_URL, else nats://127.0.0.1:4222. With both --server and a
// configuration file, the file's login and TLS settings (nats.*) are used
// on --server.
func commandNATS(server, configPath string) (config.Config, error) {
	var cfg config.Config
	if configPath != "" {
		var err error
		if cfg, err = loadConfig(configPath); err != nil || server == "" {
			return cfg, err
		}
	}
	cfg.NATS.URL = cmp.Or(server, os.Getenv("NATS_URL"), nats.DefaultURL)
	return cfg, nil
}

// natsURL is where a command finds the NATS of a running fedsender:
// nats.url, or the embedded server's nats.listen.
func natsURL(cfg config.Config) (string, error) {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL, nil
	}
	if cfg.NATS.Listen == "" {
		return "", errors.New("the configuration's embedded NATS server does not listen (nats.listen is empty)")
	}
	return "nats://" + cfg.NATS.Listen, nil
}

// connectJetStream connects a command to the NATS of a running fedsender.
// Close the returned connection when done.
func connectJetStream(cfg config.Config, name string) (*nats.Conn, jetstream.JetStream, error) {
	url, err := natsURL(cfg)
	if err != nil {
		return nil, nil, err
	}
	nc, err := connectNATS(cfg.NATS, url, name, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// connectNATS connects to url with the login and TLS settings of cfg. Its
// error shows url without passwords or tokens.
func connectNATS(cfg config.NATSConfig, url, name string, timeout time.Duration) (*nats.Conn, error) {
	opts, err := service.NATSOptions(cfg)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name(name), nats.Timeout(timeout))...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is fedsender running?): %w", redact.URL(url), redact.Error(err))
	}
	return nc, nil
}
