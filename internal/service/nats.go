package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/redact"
)

// connect returns a NATS connection: to nats.url, or to an embedded server
// with JetStream on disk under data_dir (stopped by the returned func).
// The embedded server's client URL is returned too ("" when it does not
// listen); port 0 in nats.listen picks a free port. The client's and the
// embedded server's reports go to log.
func connect(cfg config.Config, log *slog.Logger) (*nats.Conn, string, func(), error) {
	logOpts := natsClientLog(log)
	if cfg.NATS.URL != "" {
		auth, err := NATSOptions(cfg.NATS)
		if err != nil {
			return nil, "", nil, err
		}
		nc, err := nats.Connect(cfg.NATS.URL, slices.Concat(auth, logOpts, natsReconnect, []nats.Option{nats.Name("fedsender")})...)
		if err != nil {
			return nil, "", nil, fmt.Errorf("nats.url: connect to %s: %w", redact.URL(cfg.NATS.URL), redact.Error(err))
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
	serveTLS, err := secureEmbedded(opts, cfg.NATS)
	if err != nil {
		return nil, "", nil, err
	}
	login, err := natsLogin(cfg.NATS)
	if err != nil {
		return nil, "", nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, "", nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	nsLog := newNATSServerLog(log)
	ns.SetLoggerV2(nsLog, log.Enabled(context.Background(), slog.LevelDebug), false, false)
	ns.Start()
	if err := waitReady(ns, nsLog.fatal, 30*time.Second); err != nil {
		ns.Shutdown()
		return nil, "", nil, fmt.Errorf("embedded NATS server (nats.listen %s, data_dir %s): %w", cfg.NATS.Listen, cfg.DataDir, err)
	}
	// Loopback TCP was measured faster than the in-process connection,
	// which spares TLS on a listener that serves only TLS.
	var nc *nats.Conn
	client := append(append(login, logOpts...), nats.Name("fedsender"))
	if opts.DontListen || serveTLS {
		nc, err = nats.Connect("", append(client, nats.InProcessServer(ns))...)
	} else {
		nc, err = nats.Connect(ns.ClientURL(), client...)
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

// waitReady waits until ns accepts clients. Start only logs a fatal error
// (a busy port, a JetStream store it cannot open) and returns: fatal
// brings it here at once, instead of after the whole wait.
func waitReady(ns *server.Server, fatal <-chan string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections after %v", within)
		}
	}
	return nil
}
