package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/servername"
)

// valid returns a Config that passes Validate.
func valid() Config {
	c := Default()
	c.ServerName = "example.org"
	return c
}

func TestValidateValid(t *testing.T) {
	key := writeFile(t, "signing.key", "ed25519 a_key c2VjcmV0")
	for _, tc := range []struct {
		name   string
		modify func(*Config)
	}{
		{"defaults", func(*Config) {}},
		{"existing signing key", func(c *Config) { c.SigningKeyPath = key }},
		{"admin disabled", func(c *Config) { c.Admin.Listen = "" }},
		{"metrics disabled", func(c *Config) { c.Metrics.Listen = "" }},
		{"nats in-process only", func(c *Config) { c.NATS.Listen = "" }},
		{"all interfaces", func(c *Config) { c.Admin.Listen = ":8008" }},
		{"IPv6 listener", func(c *Config) { c.NATS.Listen = "[::1]:4222" }},
		{"server name with port", func(c *Config) { c.ServerName = "example.org:8448" }},
		{"fixed backoff", func(c *Config) { c.Backoff.Multiplier = 1; c.Backoff.MaxInterval = c.Backoff.MinInterval }},
		{"most partitions", func(c *Config) { c.Queue.Partitions = 1024 }},
		{"postgres URL", func(c *Config) { c.Postgres.URL = "postgres://fs:pw@db:5432/fs?sslmode=require" }},
		{"postgres key=value", func(c *Config) { c.Postgres.URL = "host=/run/postgresql dbname=fs" }},
		{"postgres schema", func(c *Config) { c.Postgres.Schema = "fedsender_2" }},
		{"pod name", func(c *Config) { c.InstanceName = "fedsender-7d9f8-x2x4k" }},
		{"instance name with dots and colon", func(c *Config) { c.InstanceName = "node1.example:2" }},
		{"synapse", func(c *Config) {
			c.Synapse.DatabaseURL = "postgres://fedsender@db/synapse"
			c.Synapse.RedisURL = "redis://:pw@redis:6379/0"
			c.Synapse.FederationDomainWhitelist = []string{"example.org", "example.com:8448"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.key")
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string // the key's YAML path, and what is wrong
	}{
		{"server name required", func(c *Config) { c.ServerName = "" }, "server_name: required"},
		{"server name invalid", func(c *Config) { c.ServerName = "exa mple.org" }, "server_name: "},
		{"signing key missing", func(c *Config) { c.SigningKeyPath = missing }, "signing_key_path: stat " + missing + ": no such file"},
		{"signing key is a directory", func(c *Config) { c.SigningKeyPath = dir }, "signing_key_path: " + dir + " is a directory"},
		{"data dir required", func(c *Config) { c.DataDir = "" }, "data_dir: required"},
		{"postgres url", func(c *Config) { c.Postgres.URL = "db.internal" }, "postgres.url: want a postgres:// URL"},
		{"synapse database url", func(c *Config) { c.Synapse.DatabaseURL = "db.internal" }, "synapse.database_url: want a postgres:// URL"},
		{"synapse redis url scheme", func(c *Config) {
			c.Synapse.DatabaseURL = "postgres://db/synapse"
			c.Synapse.RedisURL = "http://redis:6379"
		}, `synapse.redis_url: want a redis://, rediss:// or unix:// URL, got scheme "http"`},
		{"synapse redis without database", func(c *Config) { c.Synapse.RedisURL = "redis://redis" }, "synapse.redis_url: needs synapse.database_url"},
		{"synapse instance name", func(c *Config) { c.Synapse.InstanceName = "" }, "synapse.instance_name: required"},
		{"synapse whitelist", func(c *Config) { c.Synapse.FederationDomainWhitelist = []string{"exa mple.org"} }, "synapse.federation_domain_whitelist: "},
		{"synapse poll interval", func(c *Config) { c.Synapse.PollInterval = 0 }, "synapse.poll_interval: must be positive"},
		{"postgres url escape", func(c *Config) { c.Postgres.URL = "postgres://u:%zz@db/x" }, "postgres.url: not a valid URL"},
		{"postgres schema empty", func(c *Config) { c.Postgres.Schema = "" }, `postgres.schema: invalid value ""`},
		{"postgres schema quoted", func(c *Config) { c.Postgres.Schema = `a"; DROP` }, `postgres.schema: invalid value`},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, `log.level: invalid value "verbose"`},
		{"log level is lower case", func(c *Config) { c.Log.Level = "INFO" }, `log.level: invalid value "INFO"`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: invalid value "xml"`},
		{"nats listen without port", func(c *Config) { c.NATS.Listen = "127.0.0.1" }, `nats.listen: invalid address "127.0.0.1"`},
		{"nats listen named port", func(c *Config) { c.NATS.Listen = "localhost:nats" }, `nats.listen: invalid address "localhost:nats"`},
		{"nats max store", func(c *Config) { c.NATS.MaxStore = 0 }, "nats.max_store: must be positive"},
		{"nats max memory", func(c *Config) { c.NATS.MaxMemory = 0 }, "nats.max_memory: must be positive"},
		{"nats replicas", func(c *Config) { c.NATS.Replicas = 2 }, "nats.replicas: must be 1, 3 or 5, got 2"},
		{"admin listen", func(c *Config) { c.Admin.Listen = "8008" }, `admin.listen: invalid address "8008"`},
		{"admin listen port range", func(c *Config) { c.Admin.Listen = ":70000" }, `admin.listen: invalid address ":70000"`},
		{"metrics listen", func(c *Config) { c.Metrics.Listen = "9464" }, `metrics.listen: invalid address "9464"`},
		{"ca file missing", func(c *Config) { c.Federation.CAFile = missing }, "federation.ca_file: stat " + missing},
		{"request timeout", func(c *Config) { c.Federation.RequestTimeout = 0 }, "federation.request_timeout: must be positive, got 0s"},
		{"min interval", func(c *Config) { c.Backoff.MinInterval = 0 }, "backoff.min_interval: must be positive, got 0s"},
		{"multiplier", func(c *Config) { c.Backoff.Multiplier = 0.5 }, "backoff.multiplier: must be at least 1, got 0.5"},
		{"max interval", func(c *Config) { c.Backoff.MaxInterval = c.Backoff.MinInterval - 1 }, "backoff.max_interval: must be at least backoff.min_interval"},
		{"catch up after", func(c *Config) { c.Backoff.CatchUpAfter = -1 }, "backoff.catch_up_after: must be positive"},
		{"no partitions", func(c *Config) { c.Queue.Partitions = 0 }, "queue.partitions: must be between 1 and 1024, got 0"},
		{"too many partitions", func(c *Config) { c.Queue.Partitions = 1025 }, "queue.partitions: must be between 1 and 1024, got 1025"},
		{"max pending", func(c *Config) { c.Queue.MaxPending = 0 }, "queue.max_pending: must be at least 1"},
		{"retention", func(c *Config) { c.Queue.Retention = 0 }, "queue.retention: must be positive"},
		{"startup wake rate", func(c *Config) { c.Queue.StartupWakeRate = 0 }, "queue.startup_wake_rate: must be positive"},
		{"idle timeout", func(c *Config) { c.Queue.IdleTimeout = 0 }, "queue.idle_timeout: must be positive"},
		{"instance name with a space", func(c *Config) { c.InstanceName = "replica 1" }, `instance_name: invalid value "replica 1"`},
		{"instance name too long", func(c *Config) { c.InstanceName = strings.Repeat("r", 129) }, "instance_name: 129 bytes, at most 128"},
		{"lease ttl", func(c *Config) { c.Ownership.LeaseTTL = time.Second }, "ownership.lease_ttl: must be at least 2s, got 1s"},
		{"drain timeout", func(c *Config) { c.Ownership.DrainTimeout = 0 }, "ownership.drain_timeout: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			wantErr(t, c.Validate(), tc.want)
		})
	}
}

func TestValidateWrapsCauses(t *testing.T) {
	c := valid()
	c.ServerName = "exa mple.org"
	if err := c.Validate(); !errors.Is(err, servername.ErrInvalid) {
		t.Errorf("Validate: %v does not wrap servername.ErrInvalid", err)
	}

	c = valid()
	c.SigningKeyPath = filepath.Join(t.TempDir(), "missing.key")
	if err := c.Validate(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Validate: %v does not wrap fs.ErrNotExist", err)
	}
}

func TestValidateJoinsAllProblems(t *testing.T) {
	c := valid()
	c.ServerName = ""
	c.Log.Format = "xml"
	c.Backoff.MinInterval = 0
	c.Queue.Partitions = 0
	err := c.Validate()
	wantErr(t, err, "server_name:", "log.format:", "backoff.min_interval:", "queue.partitions:")
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 4 {
		t.Errorf("Validate joined %d errors, want 4: %v", n, err)
	}
}

// TestInstance: instance_name from the environment (a pod's
// FEDSENDER_INSTANCE_NAME from its name), else the host name.
func TestInstance(t *testing.T) {
	c, err := Parse([]byte("server_name: example.org\n"), []string{"FEDSENDER_INSTANCE_NAME=fedsender-0"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Instance(); got != "fedsender-0" || err != nil {
		t.Errorf("Instance() = %q, %v; want fedsender-0", got, err)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := valid().Instance(); got != host || err != nil {
		t.Errorf("Instance() without instance_name = %q, %v; want the host name %q", got, err, host)
	}
	if _, err := Parse([]byte("server_name: example.org\n"), []string{"FEDSENDER_INSTANCE_NAME=a b"}); err == nil ||
		!strings.Contains(err.Error(), "instance_name: invalid value") {
		t.Errorf("Parse with FEDSENDER_INSTANCE_NAME=\"a b\": %v, want an error naming instance_name", err)
	}
}
