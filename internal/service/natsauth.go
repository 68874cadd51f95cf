package service

import (
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fedsender/fedsender/internal/config"
)

// NATSOptions returns the nats.go options that log in to the NATS of cfg
// and verify its certificate: nats.credentials, nats.nkey_seed_file or
// nats.user with nats.password_file, and nats.tls. fedsender's commands
// (publish, destinations, projection) connect with them, and so does the
// service to nats.url.
func NATSOptions(cfg config.NATSConfig) ([]nats.Option, error) {
	opts, err := natsLogin(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CAFile))
	}
	// With the embedded server, cert_file is the server's certificate.
	if cfg.TLS.CertFile != "" && !cfg.Embedded() {
		opts = append(opts, nats.ClientCert(cfg.TLS.CertFile, cfg.TLS.KeyFile))
	}
	return opts, nil
}

// natsLogin returns the option that logs in as cfg says, if any.
func natsLogin(cfg config.NATSConfig) ([]nats.Option, error) {
	switch {
	case cfg.Credentials != "":
		return []nats.Option{nats.UserCredentials(cfg.Credentials)}, nil
	case cfg.NkeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		return []nats.Option{opt}, nil
	case cfg.User != "":
		pw, err := cfg.Password()
		if err != nil {
			return nil, err
		}
		return []nats.Option{nats.UserInfo(cfg.User, pw)}, nil
	}
	return nil, nil
}

// secureEmbedded makes the embedded server accept only the login cfg
// configures (nats.user with nats.password_file, or nats.nkey_seed_file)
// and serve TLS with nats.tls.cert_file. It reports whether the server
// serves TLS. Validate has refused a listener beyond loopback without a
// login.
func secureEmbedded(opts *server.Options, cfg config.NATSConfig) (bool, error) {
	switch {
	case cfg.NkeySeedFile != "":
		pub, err := nkeyPublic(cfg.NkeySeedFile)
		if err != nil {
			return false, fmt.Errorf("nats.nkey_seed_file: %w", err)
		}
		opts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	case cfg.User != "":
		pw, err := cfg.Password()
		if err != nil {
			return false, err
		}
		opts.Users = []*server.User{{Username: cfg.User, Password: pw}}
	}
	if cfg.TLS.CertFile == "" {
		return false, nil
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile})
	if err != nil {
		return false, fmt.Errorf("nats.tls.cert_file: %w", err)
	}
	opts.TLSConfig, opts.TLS = tc, true
	return true, nil
}

// nkeyPublic returns the public user key of the seed in file.
func nkeyPublic(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", err
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%s holds no user seed (SU...)", file)
	}
	return pub, nil
}
