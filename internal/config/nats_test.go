package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateNATSAuth(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pw := file("password", "  s3cret\n")
	empty := file("empty", " \n")
	seed := file("seed", "SUAEXAMPLE")
	creds := file("user.creds", "-----BEGIN NATS USER JWT-----")
	cert, key, ca := file("cert.pem", "c"), file("key.pem", "k"), file("ca.pem", "ca")
	missing := filepath.Join(dir, "missing")
	external := func(c *Config) { c.NATS.URL = "nats://n1:4222,nats://n2:4222" }

	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string // "" when valid
	}{
		{"user and password on nats.url", func(c *Config) { external(c); c.NATS.User, c.NATS.PasswordFile = "fs", pw }, ""},
		{"credentials on nats.url", func(c *Config) { external(c); c.NATS.Credentials = creds }, ""},
		{"nkey on nats.url", func(c *Config) { external(c); c.NATS.NkeySeedFile = seed }, ""},
		{"mutual TLS on nats.url", func(c *Config) {
			external(c)
			c.NATS.TLS = NATSTLSConfig{CAFile: ca, CertFile: cert, KeyFile: key}
		}, ""},
		{"password in nats.url", func(c *Config) { c.NATS.URL = "nats://fs:pw@n1:4222" }, ""},
		{"embedded on all interfaces with a user", func(c *Config) { c.NATS.Listen = ":4222"; c.NATS.User, c.NATS.PasswordFile = "fs", pw }, ""},
		{"embedded on all interfaces with an nkey", func(c *Config) { c.NATS.Listen = "0.0.0.0:4222"; c.NATS.NkeySeedFile = seed }, ""},
		{"embedded on localhost", func(c *Config) { c.NATS.Listen = "localhost:4222" }, ""},
		{"embedded on ::1", func(c *Config) { c.NATS.Listen = "[::1]:4222" }, ""},
		{"embedded serving TLS", func(c *Config) {
			c.NATS.User, c.NATS.PasswordFile = "fs", pw
			c.NATS.TLS = NATSTLSConfig{CAFile: ca, CertFile: cert, KeyFile: key}
		}, ""},

		{"embedded on all interfaces", func(c *Config) { c.NATS.Listen = ":4222" },
			`nats.listen: ":4222" is reachable from other hosts, so the embedded server requires authentication`},
		{"embedded on a public address", func(c *Config) { c.NATS.Listen = "192.0.2.1:4222" },
			`nats.listen: "192.0.2.1:4222" is reachable from other hosts`},
		{"embedded on a host name", func(c *Config) { c.NATS.Listen = "nats.internal:4222" },
			`nats.listen: "nats.internal:4222" is reachable from other hosts`},
		{"embedded with credentials", func(c *Config) { c.NATS.Credentials = creds }, "nats.credentials: needs nats.url"},
		{"embedded with only a CA", func(c *Config) { c.NATS.TLS.CAFile = ca }, "nats.tls.ca_file: the embedded server serves TLS only with"},
		{"two methods", func(c *Config) { external(c); c.NATS.Credentials = creds; c.NATS.NkeySeedFile = seed },
			"nats.nkey_seed_file: conflicts with nats.credentials"},
		{"user without password", func(c *Config) { external(c); c.NATS.User = "fs" }, "nats.password_file: required with nats.user"},
		{"password without user", func(c *Config) { external(c); c.NATS.PasswordFile = pw }, "nats.user: required with nats.password_file"},
		{"empty password", func(c *Config) { external(c); c.NATS.User, c.NATS.PasswordFile = "fs", empty }, "nats.password_file: " + empty + " is empty"},
		{"missing password", func(c *Config) { external(c); c.NATS.User, c.NATS.PasswordFile = "fs", missing }, "nats.password_file: open " + missing},
		{"missing credentials", func(c *Config) { external(c); c.NATS.Credentials = missing }, "nats.credentials: stat " + missing},
		{"missing seed", func(c *Config) { external(c); c.NATS.NkeySeedFile = missing }, "nats.nkey_seed_file: stat " + missing},
		{"seed is a directory", func(c *Config) { external(c); c.NATS.NkeySeedFile = dir }, "nats.nkey_seed_file: " + dir + " is a directory"},
		{"missing CA", func(c *Config) { external(c); c.NATS.TLS.CAFile = missing }, "nats.tls.ca_file: stat " + missing},
		{"cert without key", func(c *Config) { external(c); c.NATS.TLS.CertFile = cert }, "nats.tls.cert_file: nats.tls.cert_file and nats.tls.key_file go together"},
		{"key without cert", func(c *Config) { external(c); c.NATS.TLS.KeyFile = key }, "nats.tls.cert_file: nats.tls.cert_file and nats.tls.key_file go together"},
		{"password in nats.url and a method", func(c *Config) {
			c.NATS.URL = "nats://n1:4222,nats://tok@n2:4222"
			c.NATS.NkeySeedFile = seed
		}, "nats.url: carries credentials (user:password@ or token@) and nats.nkey_seed_file is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			wantErr(t, err, tc.want)
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestNATSPassword(t *testing.T) {
	c := valid()
	c.NATS.PasswordFile = writeFile(t, "password", "\tpa55 word \r\n")
	if pw, err := c.NATS.Password(); err != nil || pw != "pa55 word" {
		t.Errorf("Password() = %q, %v; want the file's content without surrounding white space", pw, err)
	}
}
