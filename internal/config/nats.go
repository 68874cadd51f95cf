package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/fedsender/fedsender/internal/redact"
)

// NATS authentication and TLS. fedsender and its commands (publish,
// destinations, deadletter, projection) authenticate with at most one of:
//
//   - credentials: a NATS credentials file (user JWT and nkey seed), for a
//     server in operator (decentralized JWT) mode; nats.url only.
//   - nkey_seed_file: a file holding a user nkey seed (SU...).
//   - user and password_file: a user name and a file holding its password
//     (surrounding white space is trimmed).
//
// On nats.url these say how to log in. With the embedded server (nats.url
// empty) they configure the server: it accepts exactly that user or nkey,
// and fedsender's own connection and its commands log in with it. The
// embedded server refuses to start without one when nats.listen is not a
// loopback address. Secrets stay in files, so no setting holds one and none
// is ever logged; a password or token in nats.url is masked (package redact).

// NATSTLSConfig secures the connection to NATS with TLS. Certificates are
// always verified.
type NATSTLSConfig struct {
	// CAFile is a PEM file of the certificate authorities trusted for the
	// NATS server's certificate, instead of the system roots. Setting it
	// requires TLS.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM certificate and its key. On nats.url
	// they are fedsender's client certificate, for a server that verifies
	// clients. With the embedded server they are its server certificate:
	// it then serves only TLS (fedsender's own connection is in-process).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Password returns the content of nats.password_file without surrounding
// white space. The error names the setting, never the content.
func (n NATSConfig) Password() (string, error) {
	data, err := os.ReadFile(n.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("nats.password_file: %w", err)
	}
	pw := strings.TrimSpace(string(data))
	if pw == "" {
		return "", fmt.Errorf("nats.password_file: %s is empty", n.PasswordFile)
	}
	return pw, nil
}

// hasLogin reports whether a login is configured.
func (n NATSConfig) hasLogin() bool {
	return n.Credentials != "" || n.NkeySeedFile != "" || n.User != ""
}

// Embedded reports whether fedsender runs its own NATS server.
func (n NATSConfig) Embedded() bool { return n.URL == "" }

func (n NATSConfig) validateAuth(p *problems) {
	var methods []string
	for _, m := range []struct{ key, value string }{
		{"nats.credentials", n.Credentials},
		{"nats.nkey_seed_file", n.NkeySeedFile},
		{"nats.user", n.User},
	} {
		if m.value != "" {
			methods = append(methods, m.key)
		}
	}
	if len(methods) > 1 {
		p.addf(methods[1], "conflicts with %s: set one authentication method", methods[0])
	}
	if n.Credentials != "" {
		p.add("nats.credentials", checkReadable(n.Credentials))
	}
	if n.NkeySeedFile != "" {
		p.add("nats.nkey_seed_file", checkReadable(n.NkeySeedFile))
	}
	switch {
	case n.User != "" && n.PasswordFile == "":
		p.addf("nats.password_file", "required with nats.user")
	case n.User == "" && n.PasswordFile != "":
		p.addf("nats.user", "required with nats.password_file")
	case n.PasswordFile != "":
		if _, err := n.Password(); err != nil {
			*p = append(*p, err)
		}
	}
	for _, f := range []struct{ key, value string }{
		{"nats.tls.ca_file", n.TLS.CAFile},
		{"nats.tls.cert_file", n.TLS.CertFile},
		{"nats.tls.key_file", n.TLS.KeyFile},
	} {
		if f.value != "" {
			p.add(f.key, checkReadable(f.value))
		}
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		p.addf("nats.tls.cert_file", "nats.tls.cert_file and nats.tls.key_file go together")
	}
	if n.Embedded() {
		n.validateEmbeddedAuth(p)
	} else if redact.URL(n.URL) != n.URL && len(methods) > 0 {
		p.addf("nats.url", "carries credentials (user:password@ or token@) and %s is set: use one", methods[0])
	}
}

// validateEmbeddedAuth checks what the embedded server can enforce: a
// server reachable from other hosts must require a login.
func (n NATSConfig) validateEmbeddedAuth(p *problems) {
	if n.Credentials != "" {
		p.addf("nats.credentials", "needs nats.url: the embedded server accepts nats.user with nats.password_file, or nats.nkey_seed_file")
	}
	if n.TLS.CAFile != "" && n.TLS.CertFile == "" {
		p.addf("nats.tls.ca_file", "the embedded server serves TLS only with nats.tls.cert_file and nats.tls.key_file")
	}
	if n.Listen != "" && !n.hasLogin() && !loopback(n.Listen) {
		p.addf("nats.listen", "%q is reachable from other hosts, so the embedded server requires authentication: "+
			"set nats.user and nats.password_file, or nats.nkey_seed_file (or listen on 127.0.0.1)", n.Listen)
	}
}

// loopback reports whether the listen address host:port accepts only
// connections from this host. An empty host listens on every interface.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkReadable reports whether name is a file fedsender can read.
func checkReadable(name string) error {
	if err := checkFile(name); err != nil {
		return err
	}
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	return f.Close()
}
