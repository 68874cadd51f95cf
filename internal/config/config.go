package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Config is every setting of fedsender. Build it with Default, Load or Parse;
// the zero value is not usable.
type Config struct {
	// ServerName is the Matrix server name fedsender sends as. Required.
	ServerName string `yaml:"server_name"`
	// InstanceName names this replica among those sharing the NATS
	// streams: unique per replica. Empty means the host name (the pod name
	// on Kubernetes); use Instance to resolve it.
	InstanceName string `yaml:"instance_name"`
	// SigningKeyPath is the Synapse-format ed25519 signing key file. Empty
	// means <DataDir>/signing.key, generated on first run (for development);
	// when set, the file must already exist. Use KeyPath to resolve it.
	SigningKeyPath string `yaml:"signing_key_path"`
	// DataDir holds fedsender's local state (the embedded NATS server's
	// JetStream store and the development signing key).
	DataDir string `yaml:"data_dir"`

	Log        LogConfig        `yaml:"log"`
	NATS       NATSConfig       `yaml:"nats"`
	Admin      AdminConfig      `yaml:"admin"`
	Federation FederationConfig `yaml:"federation"`
	Backoff    BackoffConfig    `yaml:"backoff"`
	Queue      QueueConfig      `yaml:"queue"`
	Metrics    MetricsConfig    `yaml:"metrics"`
	Postgres   PostgresConfig   `yaml:"postgres"`
	Ownership  OwnershipConfig  `yaml:"ownership"`
	Synapse    SynapseConfig    `yaml:"synapse"`
}

// OwnershipConfig sizes the leases through which replicas share the
// partitions (internal/ownership).
type OwnershipConfig struct {
	// LeaseTTL is how long a replica's membership and partition leases
	// outlive its last renewal: a crashed replica's partitions are taken
	// over about this long after it died.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// DrainTimeout bounds the drain of a partition handed to another
	// replica, and of all of them on SIGTERM: in-flight transactions
	// finish (or are abandoned past it), offsets and watermarks are
	// persisted, the leases are released. Keep Kubernetes'
	// terminationGracePeriodSeconds above it.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// LogConfig configures the process's slog handler.
type LogConfig struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// NATSConfig says which NATS server carries the streams.
type NATSConfig struct {
	// URL of an external NATS server (or a comma-separated list of a
	// cluster's servers). Empty runs an embedded NATS server; the other
	// fields below then configure it. Passwords and tokens in it are
	// masked in logs and errors; prefer the options below.
	URL string `yaml:"url" secret:"userinfo"`
	// Listen is the embedded server's client listener as host:port. Empty
	// means in-process connections only.
	Listen string `yaml:"listen"`
	// MaxStore caps the embedded JetStream file store, in bytes.
	MaxStore int64 `yaml:"max_store"`
	// MaxMemory caps the embedded JetStream memory store, in bytes.
	MaxMemory int64 `yaml:"max_memory"`
	// Replicas is the replica count of every stream: 1, or 3 or 5 on a
	// NATS cluster.
	Replicas int `yaml:"replicas"`

	// The login, at most one of Credentials, NkeySeedFile, or User with
	// PasswordFile: to nats.url, or the one the embedded server accepts
	// (see nats.go in this package).
	//
	// Credentials is a NATS credentials file (user JWT and nkey seed).
	Credentials string `yaml:"credentials"`
	// NkeySeedFile holds a user nkey seed (SU...).
	NkeySeedFile string `yaml:"nkey_seed_file"`
	// User is a user name whose password is in PasswordFile.
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	// TLS secures the connection to NATS, or the embedded server.
	TLS NATSTLSConfig `yaml:"tls"`
}

// AdminConfig configures the admin HTTP API.
type AdminConfig struct {
	// Listen is host:port, or empty to disable the admin listener.
	Listen string `yaml:"listen"`
	// Token is the bearer token the admin API requires. Empty makes the
	// admin API refuse every request; health endpoints work regardless.
	// Redacted and LogValue hide it.
	Token string `yaml:"token" secret:"true"`
}

// FederationConfig configures outbound federation requests.
type FederationConfig struct {
	// TLSInsecureSkipVerify disables certificate verification of remote
	// servers. For tests only.
	TLSInsecureSkipVerify bool `yaml:"tls_insecure_skip_verify"`
	// CAFile is a PEM file of extra root certificates, trusted in addition
	// to the system roots. Empty adds none.
	CAFile string `yaml:"ca_file"`
	// IPRangeAllowlist are ranges let through even when the denylist
	// covers them.
	IPRangeAllowlist []netip.Prefix `yaml:"ip_range_allowlist"`
	// IPRangeDenylist are ranges fedsender never connects to. Empty means
	// Synapse's default denylist, which the dialer supplies.
	IPRangeDenylist []netip.Prefix `yaml:"ip_range_denylist"`
	// RequestTimeout bounds one federation request.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// SendSlots bounds the transactions being built, signed and written at
	// once across all destinations (0: 4 per CPU). Waiting destinations
	// keep queueing and send bigger transactions.
	SendSlots int `yaml:"send_slots"`
	// ReceiptsPerRoomPerSecond paces a read receipt for an event older
	// than a minute in a room of 10 or more servers: its destinations get
	// it at this rate (Synapse's federation_rr_transactions_per_room_per_second),
	// within 30 s, unless a transaction goes to them anyway.
	ReceiptsPerRoomPerSecond float64 `yaml:"receipts_per_room_per_second"`
}

// MetricsConfig configures the Prometheus endpoint. Traces and other
// exporters are configured by the standard OTEL_* environment variables.
type MetricsConfig struct {
	// Listen is the host:port serving /metrics in the Prometheus text
	// format, or empty to disable metrics.
	Listen string `yaml:"listen"`
	// PerDestinationLabels adds a destination label to the per-destination
	// counters and histograms: one series per remote server, which a large
	// deployment's Prometheus may not afford. Off by default.
	PerDestinationLabels bool `yaml:"per_destination_labels"`
}

// PostgresConfig points the admin surfaces' read model at PostgreSQL
// (package pgprojection): fedsender then keeps Synapse-compatible
// destinations tables there and answers the admin API from them.
type PostgresConfig struct {
	// URL is a libpq connection string or postgres:// URL. Empty: no
	// PostgreSQL, the JetStream KV read model serves the admin surfaces.
	// It may hold a password, so it is redacted like admin.token.
	URL string `yaml:"url" secret:"true"`
	// Schema holds fedsender's tables; created by the migrations.
	Schema string `yaml:"schema"`
}

// SynapseConfig points fedsender at a Synapse homeserver whose
// federation_sender workers it replaces (package synapse): with
// DatabaseURL set, `fedsender run` takes its PDUs and EDUs from Synapse's
// database, woken by Synapse's replication stream on Redis.
type SynapseConfig struct {
	// DatabaseURL is Synapse's PostgreSQL (a postgres:// URL or libpq
	// key=value string). Empty: no Synapse feed. It may hold a password,
	// so it is redacted like admin.token.
	DatabaseURL string `yaml:"database_url" secret:"true"`
	// RedisURL is Synapse's replication Redis (redis:// or rediss://).
	// Empty: the feed polls the database every PollInterval.
	RedisURL string `yaml:"redis_url" secret:"userinfo"`
	// InstanceName is the name the operator lists in Synapse's
	// federation_sender_instances; fedsender keeps its
	// federation_stream_position rows under it.
	InstanceName string `yaml:"instance_name"`
	// FederationDomainWhitelist is Synapse's federation_domain_whitelist:
	// when not empty, only these servers are sent anything.
	FederationDomainWhitelist []string `yaml:"federation_domain_whitelist"`
	// PollInterval is how often the feed reads the database while Redis
	// is down or not configured (with Redis up, 10 times as long, as a
	// safety net for missed replication messages).
	PollInterval time.Duration `yaml:"poll_interval"`
}

// BackoffConfig is the retry schedule of a failing destination: the wait
// starts at MinInterval and is multiplied by Multiplier after each failure,
// up to MaxInterval.
type BackoffConfig struct {
	MinInterval time.Duration `yaml:"min_interval"`
	Multiplier  float64       `yaml:"multiplier"`
	MaxInterval time.Duration `yaml:"max_interval"`
	// CatchUpAfter is how long a destination must have been failing before
	// it is switched to catch-up mode instead of replaying its queue.
	CatchUpAfter time.Duration `yaml:"catch_up_after"`
}

// QueueConfig sizes the per-destination queues and the streams behind them.
type QueueConfig struct {
	// Partitions is the fixed number of partitions destinations are hashed
	// into (1..1024). It is baked into the streams' subjects: changing it
	// on an existing deployment requires resetting the streams.
	Partitions int `yaml:"partitions"`
	// MaxPending bounds each destination's in-memory queue; on overflow the
	// destination falls back to catch-up.
	MaxPending int `yaml:"max_pending"`
	// Retention is how long the PDU stream keeps messages.
	Retention time.Duration `yaml:"retention"`
	// StartupWakeRate is how many destinations are woken per second after
	// start, so a restart does not hit every remote server at once.
	StartupWakeRate int `yaml:"startup_wake_rate"`
	// IdleTimeout is how long a destination actor may stay idle before it
	// is stopped.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxQueued bounds the PDU entries all healthy destinations hold in
	// their queues together: the reader waits when it is reached. One slow
	// server holds at most max_pending, so keep it well above max_pending.
	MaxQueued int64 `yaml:"max_queued"`
	// CheckpointInterval is how often offsets and watermarks are persisted.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// Sizes in bytes.
const (
	miB = 1 << 20
	giB = 1 << 30
)

// Default returns the defaults of every setting. ServerName is empty, so
// the result does not pass Validate until it is set.
func Default() Config {
	return Config{
		DataDir: "./data",
		Log: LogConfig{
			Level:  "info",
			Format: "text",
		},
		NATS: NATSConfig{
			Listen:    "127.0.0.1:4222",
			MaxStore:  10 * giB,
			MaxMemory: 256 * miB,
			Replicas:  1,
		},
		Admin: AdminConfig{
			Listen: "127.0.0.1:8008",
		},
		Federation: FederationConfig{
			RequestTimeout:           60 * time.Second,
			ReceiptsPerRoomPerSecond: 50,
		},
		Backoff: BackoffConfig{
			MinInterval:  10 * time.Minute,
			Multiplier:   2,
			MaxInterval:  168 * time.Hour,
			CatchUpAfter: time.Hour,
		},
		Queue: QueueConfig{
			Partitions:         64,
			MaxPending:         10000,
			Retention:          336 * time.Hour,
			StartupWakeRate:    20,
			IdleTimeout:        5 * time.Minute,
			MaxQueued:          1_000_000,
			CheckpointInterval: time.Second,
		},
		Metrics: MetricsConfig{
			Listen: "127.0.0.1:9464",
		},
		Postgres: PostgresConfig{
			Schema: "fedsender",
		},
		Ownership: OwnershipConfig{
			LeaseTTL:     6 * time.Second,
			DrainTimeout: 20 * time.Second,
		},
		Synapse: SynapseConfig{
			InstanceName: "fedsender",
			PollInterval: time.Second,
		},
	}
}

// Instance returns InstanceName, or the host name when it is empty.
func (c Config) Instance() (string, error) {
	if c.InstanceName != "" {
		return c.InstanceName, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("instance_name: empty, and the host name is unknown: %w", err)
	}
	if err := checkInstanceName(host); err != nil {
		return "", fmt.Errorf("instance_name: empty, and the host name cannot stand for it: %w", err)
	}
	return host, nil
}

// KeyPath returns the signing key file: SigningKeyPath when set, otherwise
// signing.key inside DataDir.
func (c Config) KeyPath() string {
	if c.SigningKeyPath != "" {
		return c.SigningKeyPath
	}
	return filepath.Join(c.DataDir, "signing.key")
}
