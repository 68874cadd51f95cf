package service

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/config"
)

// connect returns a NATS connection: to nats.url, or to an embedded server
// with JetStream on disk under data_dir (stopped by the returned func).
// The embedded server's client URL is returned too ("" when it does not
// listen); port 0 in nats.listen picks a free port.
func connect(cfg config.Config) (*nats.Conn, string, func(), error) {
	if cfg.NATS.URL != "" {
		nc, err := nats.Connect(cfg.NATS.URL, append(natsReconnect, nats.Name("fedsender"))...)
		if err != nil {
			return nil, "", nil, fmt.Errorf("nats.url: connect to %s: %w", cfg.NATS.URL, err)
		}
		return nc, "", nc.Close, nil
	}
	opts := &server.Options{
		ServerName:         "fedsender",
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "nats"),
		JetStreamMaxStore:  cfg.NATS.MaxStore,
		JetStreamMaxMemory: cfg.NATS.MaxMemory,
		NoSigs:             true,
	}
	if cfg.NATS.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.NATS.Listen)
		if err != nil {
			return nil, "", nil, fmt.Errorf("nats.listen: %w", err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, "", nil, fmt.Errorf("nats.listen: bad port %q", port)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, "", nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, "", nil, fmt.Errorf("embedded NATS server: not ready (is nats.listen %s free?)", cfg.NATS.Listen)
	}
	// Loopback TCP was measured faster than the in-process connection.
	var nc *nats.Conn
	if opts.DontListen {
		nc, err = nats.Connect("", nats.InProcessServer(ns), nats.Name("fedsender"))
	} else {
		nc, err = nats.Connect(ns.ClientURL(), nats.Name("fedsender"))
	}
	if err != nil {
		ns.Shutdown()
		return nil, "", nil, fmt.Errorf("embedded NATS server: connect: %w", err)
	}
	url := ""
	if !opts.DontListen {
		url = ns.ClientURL()
	}
	return nc, url, func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	}, nil
}
