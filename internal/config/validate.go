package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedsender/fedsender/internal/servername"
)

// Limits of queue.partitions.
const (
	minPartitions = 1
	maxPartitions = 1024
)

var (
	logLevels     = []string{"debug", "info", "warn", "error"}
	logFormats    = []string{"text", "json"}
	replicaCounts = []int{1, 3, 5}
)

// Validate reports every problem of c, joined with errors.Join, each naming
// the setting by its YAML path. It checks that the files named by
// signing_key_path and federation.ca_file exist, so its result depends on
// the file system.
func (c Config) Validate() error {
	var p problems
	if c.ServerName == "" {
		p.addf("server_name", "required")
	} else if err := servername.Validate(c.ServerName); err != nil {
		p.add("server_name", err)
	}
	if c.InstanceName != "" {
		p.add("instance_name", checkInstanceName(c.InstanceName))
	}
	if c.SigningKeyPath != "" {
		p.add("signing_key_path", checkFile(c.SigningKeyPath))
	}
	if c.DataDir == "" {
		p.addf("data_dir", "required")
	}
	c.Log.validate(&p)
	c.NATS.validate(&p)
	c.Admin.validate(&p)
	c.Federation.validate(&p)
	c.Backoff.validate(&p)
	c.Queue.validate(&p)
	c.Metrics.validate(&p)
	c.Postgres.validate(&p)
	c.Ownership.validate(&p)
	c.Synapse.validate(&p)
	return errors.Join(p...)
}

func (l LogConfig) validate(p *problems) {
	if !slices.Contains(logLevels, l.Level) {
		p.addf("log.level", "invalid value %q (want debug, info, warn or error)", l.Level)
	}
	if !slices.Contains(logFormats, l.Format) {
		p.addf("log.format", "invalid value %q (want text or json)", l.Format)
	}
}

func (n NATSConfig) validate(p *problems) {
	if n.Listen != "" {
		p.add("nats.listen", checkListen(n.Listen))
	}
	if n.MaxStore <= 0 {
		p.addf("nats.max_store", "must be positive, got %d", n.MaxStore)
	}
	if n.MaxMemory <= 0 {
		p.addf("nats.max_memory", "must be positive, got %d", n.MaxMemory)
	}
	if !slices.Contains(replicaCounts, n.Replicas) {
		p.addf("nats.replicas", "must be 1, 3 or 5, got %d", n.Replicas)
	}
	n.validateAuth(p)
}

func (a AdminConfig) validate(p *problems) {
	if a.Listen != "" {
		p.add("admin.listen", checkListen(a.Listen))
	}
}

// schemaName is what postgres.schema accepts: an unquoted PostgreSQL
// identifier, so it can be put in SQL without quoting surprises.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (pg PostgresConfig) validate(p *problems) {
	if pg.URL != "" {
		if err := checkPostgresURL(pg.URL); err != nil {
			p.add("postgres.url", err)
		}
	}
	if !schemaName.MatchString(pg.Schema) {
		p.addf("postgres.schema", "invalid value %q (want a lower-case identifier: letters, digits, _)", pg.Schema)
	}
}

// checkPostgresURL accepts postgres:// and postgresql:// URLs and libpq
// key=value strings; it does not connect.
func checkPostgresURL(s string) error {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		if _, err := url.Parse(s); err != nil {
			return errors.New("not a valid URL") // url's error would echo the password
		}
		return nil
	}
	if !strings.Contains(s, "=") {
		return errors.New("want a postgres:// URL or key=value connection string")
	}
	return nil
}

func (s SynapseConfig) validate(p *problems) {
	if s.DatabaseURL != "" {
		if err := checkPostgresURL(s.DatabaseURL); err != nil {
			p.add("synapse.database_url", err)
		}
	}
	if s.RedisURL != "" {
		if s.DatabaseURL == "" {
			p.addf("synapse.redis_url", "needs synapse.database_url")
		}
		p.add("synapse.redis_url", checkRedisURL(s.RedisURL))
	}
	if s.InstanceName == "" {
		p.addf("synapse.instance_name", "required (the name listed in Synapse's federation_sender_instances)")
	}
	for _, d := range s.FederationDomainWhitelist {
		if err := servername.Validate(d); err != nil {
			p.add("synapse.federation_domain_whitelist", err)
		}
	}
	p.positive("synapse.poll_interval", s.PollInterval)
}

// checkRedisURL accepts redis://, rediss:// and unix:// URLs; it does not
// connect.
func checkRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL") // url's error would echo the password
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		return nil
	}
	return fmt.Errorf("want a redis://, rediss:// or unix:// URL, got scheme %q", u.Scheme)
}

func (m MetricsConfig) validate(p *problems) {
	if m.Listen != "" {
		p.add("metrics.listen", checkListen(m.Listen))
	}
}

func (f FederationConfig) validate(p *problems) {
	if f.CAFile != "" {
		p.add("federation.ca_file", checkFile(f.CAFile))
	}
	p.positive("federation.request_timeout", f.RequestTimeout)
	if f.SendSlots < 0 {
		p.addf("federation.send_slots", "must be 0 (4 per CPU) or more, got %d", f.SendSlots)
	}
	if !(f.ReceiptsPerRoomPerSecond > 0) || math.IsInf(f.ReceiptsPerRoomPerSecond, 0) {
		p.addf("federation.receipts_per_room_per_second", "must be more than 0, got %g", f.ReceiptsPerRoomPerSecond)
	}
}

func (b BackoffConfig) validate(p *problems) {
	p.positive("backoff.min_interval", b.MinInterval)
	if !(b.Multiplier >= 1) || math.IsInf(b.Multiplier, 0) {
		p.addf("backoff.multiplier", "must be at least 1, got %g", b.Multiplier)
	}
	if b.MaxInterval < b.MinInterval {
		p.addf("backoff.max_interval", "must be at least backoff.min_interval (%s), got %s", b.MinInterval, b.MaxInterval)
	}
	p.positive("backoff.catch_up_after", b.CatchUpAfter)
}

func (q QueueConfig) validate(p *problems) {
	if q.Partitions < minPartitions || q.Partitions > maxPartitions {
		p.addf("queue.partitions", "must be between %d and %d, got %d", minPartitions, maxPartitions, q.Partitions)
	}
	if q.MaxPending < 1 {
		p.addf("queue.max_pending", "must be at least 1, got %d", q.MaxPending)
	}
	p.positive("queue.retention", q.Retention)
	if q.StartupWakeRate <= 0 {
		p.addf("queue.startup_wake_rate", "must be positive, got %d", q.StartupWakeRate)
	}
	p.positive("queue.idle_timeout", q.IdleTimeout)
	if q.MaxQueued < int64(q.MaxPending) {
		p.addf("queue.max_queued", "must be at least queue.max_pending (%d), got %d", q.MaxPending, q.MaxQueued)
	}
	p.positive("queue.checkpoint_interval", q.CheckpointInterval)
}

// maxInstanceName bounds instance_name: it is a KV key token and a
// metric label.
const maxInstanceName = 128

// checkInstanceName accepts printable ASCII without spaces: the name is
// shown in logs and metrics, and encoded (streams.EncodeToken) for KV keys.
func checkInstanceName(s string) error {
	if len(s) > maxInstanceName {
		return fmt.Errorf("%d bytes, at most %d allowed", len(s), maxInstanceName)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("invalid value %q: want printable ASCII without spaces (a host or pod name)", s)
		}
	}
	return nil
}

func (o OwnershipConfig) validate(p *problems) {
	if o.LeaseTTL < 2*time.Second {
		p.addf("ownership.lease_ttl", "must be at least 2s, got %s", o.LeaseTTL)
	}
	p.positive("ownership.drain_timeout", o.DrainTimeout)
}

// problems collects Validate's findings, each prefixed with the YAML path of
// the setting it is about.
type problems []error

func (p *problems) add(path string, err error) {
	if err != nil {
		*p = append(*p, fmt.Errorf("%s: %w", path, err))
	}
}

func (p *problems) addf(path, format string, args ...any) {
	p.add(path, fmt.Errorf(format, args...))
}

func (p *problems) positive(path string, d time.Duration) {
	if d <= 0 {
		p.addf(path, "must be positive, got %s", d)
	}
}

// checkFile reports whether the file name exists and is not a directory.
// The error wraps the os.Stat error, so callers can test it with
// errors.Is(err, fs.ErrNotExist).
func checkFile(name string) error {
	fi, err := os.Stat(name)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory, not a file", name)
	}
	return nil
}

// checkListen reports whether addr is host:port with a numeric port. The
// host may be empty to listen on every interface.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("invalid address %q (want host:port)", addr)
	}
	return nil
}
