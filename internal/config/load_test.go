package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		environ []string
		want    []string // substrings of the error; the first names the key
	}{
		{
			name: "invalid duration",
			yaml: "backoff:\n  min_interval: ten\n",
			want: []string{`backoff.min_interval: invalid duration "ten"`},
		},
		{
			name: "duration without unit",
			yaml: "federation:\n  request_timeout: 60\n",
			want: []string{`federation.request_timeout: invalid duration "60"`},
		},
		{
			name: "invalid CIDR",
			yaml: "federation:\n  ip_range_allowlist: [10.0.0.0/8, 10.0.0.0/33]\n",
			want: []string{`federation.ip_range_allowlist: invalid CIDR "10.0.0.0/33"`},
		},
		{
			name: "CIDR with host bits",
			yaml: "federation:\n  ip_range_denylist: [10.0.0.1/8]\n",
			want: []string{`federation.ip_range_denylist: invalid CIDR "10.0.0.1/8"`, "10.0.0.0/8"},
		},
		{
			name: "unknown nested key",
			yaml: "nats:\n  bogus: 1\n",
			want: []string{"nats.bogus: unknown key"},
		},
		{
			name: "unknown top-level key",
			yaml: "sever_name: example.org\n",
			want: []string{"sever_name: unknown key"},
		},
		{
			name: "unknown key under a leaf's sibling mapping",
			yaml: "log:\n  level: info\n  extra:\n    x: 1\n",
			want: []string{"log.extra: unknown key"},
		},
		{
			name: "duplicate key",
			yaml: "log:\n  level: info\n  level: debug\n",
			want: []string{"log.level: duplicate key"},
		},
		{
			name: "group is not a mapping",
			yaml: "nats: 5\n",
			want: []string{"nats: expected a mapping"},
		},
		{
			name: "root is not a mapping",
			yaml: "- server_name\n",
			want: []string{"config: expected a mapping"},
		},
		{
			name: "scalar given a list",
			yaml: "log:\n  level: [info]\n",
			want: []string{"log.level: expected a single value, got a list"},
		},
		{
			name: "list given a scalar",
			yaml: "federation:\n  ip_range_allowlist: 10.0.0.0/8\n",
			want: []string{"federation.ip_range_allowlist: expected a list"},
		},
		{
			name: "list of mappings",
			yaml: "federation:\n  ip_range_allowlist:\n    - cidr: 10.0.0.0/8\n",
			want: []string{"federation.ip_range_allowlist: expected a list of values"},
		},
		{
			name: "invalid integer",
			yaml: "queue:\n  partitions: many\n",
			want: []string{`queue.partitions: invalid integer "many"`},
		},
		{
			name: "invalid boolean",
			yaml: "federation:\n  tls_insecure_skip_verify: maybe\n",
			want: []string{`federation.tls_insecure_skip_verify: invalid boolean "maybe"`},
		},
		{
			name: "invalid float",
			yaml: "backoff:\n  multiplier: double\n",
			want: []string{`backoff.multiplier: invalid number "double"`},
		},
		{
			name: "invalid size",
			yaml: "nats:\n  max_store: 10G\n",
			want: []string{`nats.max_store: invalid size "10G"`},
		},
		{
			name: "YAML syntax",
			yaml: "log: [\n",
			want: []string{"config: yaml:"},
		},
		{
			name: "several documents",
			yaml: minimalYAML + "---\n" + minimalYAML,
			want: []string{"one YAML document"},
		},
		{
			name:    "env invalid duration",
			yaml:    minimalYAML,
			environ: []string{"FEDSENDER_BACKOFF_MIN_INTERVAL=x"},
			want:    []string{`FEDSENDER_BACKOFF_MIN_INTERVAL (backoff.min_interval): invalid duration "x"`},
		},
		{
			name:    "env invalid CIDR in list",
			yaml:    minimalYAML,
			environ: []string{"FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST=10.0.0.0/8,nope"},
			want:    []string{`FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST (federation.ip_range_allowlist): invalid CIDR "nope"`},
		},
		{
			name:    "env invalid boolean",
			yaml:    minimalYAML,
			environ: []string{"FEDSENDER_FEDERATION_TLS_INSECURE_SKIP_VERIFY=yes"},
			want:    []string{`FEDSENDER_FEDERATION_TLS_INSECURE_SKIP_VERIFY (federation.tls_insecure_skip_verify): invalid boolean "yes"`},
		},
		{
			name:    "env unknown variable",
			yaml:    minimalYAML,
			environ: []string{"FEDSENDER_NATS_BOGUS=1"},
			want:    []string{"FEDSENDER_NATS_BOGUS: unknown environment variable"},
		},
		{
			name:    "env names a group, not a setting",
			yaml:    minimalYAML,
			environ: []string{"FEDSENDER_NATS=x"},
			want:    []string{"FEDSENDER_NATS: unknown environment variable"},
		},
		{
			name:    "file and env problems are all reported",
			yaml:    "nats:\n  bogus: 1\nqueue:\n  partitions: x\n",
			environ: []string{"FEDSENDER_BOGUS=1", "FEDSENDER_QUEUE_RETENTION=forever"},
			want: []string{
				"nats.bogus: unknown key",
				`queue.partitions: invalid integer "x"`,
				"FEDSENDER_BOGUS: unknown environment variable",
				`FEDSENDER_QUEUE_RETENTION (queue.retention): invalid duration "forever"`,
			},
		},
		{
			name: "validation runs after parsing",
			yaml: "backoff:\n  multiplier: 0.5\n",
			want: []string{"server_name: required", "backoff.multiplier: must be at least 1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), tc.environ)
			wantErr(t, err, tc.want...)
		})
	}
}

func TestParseYAML(t *testing.T) {
	c := mustParse(t, `
server_name: example.org
nats:
  url: nats://nats:4222
  max_store: 1TiB
  max_memory: 1000000
federation:
  tls_insecure_skip_verify: true
  ip_range_allowlist: [192.168.1.0/24, "fd00::/8"]
backoff:
  min_interval: &short 30s
  multiplier: 1.5
  catch_up_after: *short
queue:
  partitions: 16
log:            # null: keeps the defaults
`)
	want := Default()
	want.ServerName = "example.org"
	want.NATS.URL = "nats://nats:4222"
	want.NATS.MaxStore = 1 << 40
	want.NATS.MaxMemory = 1000000
	want.Federation.TLSInsecureSkipVerify = true
	want.Federation.IPRangeAllowlist = []netip.Prefix{
		netip.MustParsePrefix("192.168.1.0/24"),
		netip.MustParsePrefix("fd00::/8"),
	}
	want.Backoff.MinInterval = 30 * time.Second
	want.Backoff.Multiplier = 1.5
	want.Backoff.CatchUpAfter = 30 * time.Second
	want.Queue.Partitions = 16
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", c, want)
	}
}

// TestEnvOverridesEverySetting sets every FEDSENDER_* variable at once, so
// it also proves that every setting can be overridden from the environment.
func TestEnvOverridesEverySetting(t *testing.T) {
	key := writeFile(t, "signing.key", "ed25519 a_key c2VjcmV0")
	ca := writeFile(t, "ca.pem", "")
	environ := []string{
		"PATH=/usr/bin", // not ours: ignored
		"FEDSENDER_SERVER_NAME=env.example.org",
		"FEDSENDER_SIGNING_KEY_PATH=" + key,
		"FEDSENDER_DATA_DIR=/var/lib/fedsender",
		"FEDSENDER_LOG_LEVEL=debug",
		"FEDSENDER_LOG_FORMAT=json",
		"FEDSENDER_NATS_URL=nats://a:4222,nats://b:4222",
		"FEDSENDER_NATS_LISTEN=",
		"FEDSENDER_NATS_MAX_STORE=512MiB",
		"FEDSENDER_NATS_MAX_MEMORY=2GB",
		"FEDSENDER_NATS_REPLICAS=3",
		"FEDSENDER_NATS_CREDENTIALS=/etc/fedsender/nats.creds",
		"FEDSENDER_NATS_NKEY_SEED_FILE=/etc/fedsender/nats.nk",
		"FEDSENDER_NATS_USER=fedsender",
		"FEDSENDER_NATS_PASSWORD_FILE=/etc/fedsender/nats.password",
		"FEDSENDER_NATS_TLS_CA_FILE=/etc/fedsender/nats-ca.pem",
		"FEDSENDER_NATS_TLS_CERT_FILE=/etc/fedsender/nats.pem",
		"FEDSENDER_NATS_TLS_KEY_FILE=/etc/fedsender/nats.key",
		"FEDSENDER_ADMIN_LISTEN=:9000",
		"FEDSENDER_ADMIN_TOKEN=s3cret",
		"FEDSENDER_FEDERATION_TLS_INSECURE_SKIP_VERIFY=true",
		"FEDSENDER_FEDERATION_CA_FILE=" + ca,
		"FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST=10.1.0.0/16, fd00::/8",
		"FEDSENDER_FEDERATION_IP_RANGE_DENYLIST=10.0.0.0/8",
		"FEDSENDER_FEDERATION_REQUEST_TIMEOUT=15s",
		"FEDSENDER_FEDERATION_SEND_SLOTS=12",
		"FEDSENDER_FEDERATION_RECEIPTS_PER_ROOM_PER_SECOND=20",
		"FEDSENDER_BACKOFF_MIN_INTERVAL=1m",
		"FEDSENDER_BACKOFF_MULTIPLIER=3.5",
		"FEDSENDER_BACKOFF_MAX_INTERVAL=24h",
		"FEDSENDER_BACKOFF_CATCH_UP_AFTER=2h",
		"FEDSENDER_QUEUE_PARTITIONS=128",
		"FEDSENDER_QUEUE_MAX_PENDING=500",
		"FEDSENDER_QUEUE_RETENTION=72h",
		"FEDSENDER_QUEUE_STARTUP_WAKE_RATE=5",
		"FEDSENDER_QUEUE_IDLE_TIMEOUT=30s",
		"FEDSENDER_QUEUE_MAX_QUEUED=40000",
		"FEDSENDER_QUEUE_CHECKPOINT_INTERVAL=250ms",
		"FEDSENDER_METRICS_LISTEN=0.0.0.0:9100",
		"FEDSENDER_METRICS_PER_DESTINATION_LABELS=true",
		"FEDSENDER_POSTGRES_URL=postgres://fedsender@db/fedsender",
		"FEDSENDER_POSTGRES_SCHEMA=fs_prod",
		"FEDSENDER_INSTANCE_NAME=fedsender-2",
		"FEDSENDER_OWNERSHIP_LEASE_TTL=10s",
		"FEDSENDER_OWNERSHIP_DRAIN_TIMEOUT=40s",
		"FEDSENDER_SYNAPSE_DATABASE_URL=postgres://fedsender@db/synapse",
		"FEDSENDER_SYNAPSE_REDIS_URL=redis://redis:6379/0",
		"FEDSENDER_SYNAPSE_INSTANCE_NAME=fedsender2",
		"FEDSENDER_SYNAPSE_FEDERATION_DOMAIN_WHITELIST=a.example, b.example:8448",
		"FEDSENDER_SYNAPSE_POLL_INTERVAL=250ms",
	}
	if got, want := len(environ)-1, len(loadSchema().settings); got != want {
		t.Fatalf("test sets %d variables, but there are %d settings: cover the new ones", got, want)
	}
	// Not Parse: Validate would refuse three authentication methods at
	// once, and files that do not exist (TestValidateNATSAuth checks those).
	c := Default()
	if err := loadSchema().applyEnv(&c, environ); err != nil {
		t.Fatal(err)
	}

	want := Config{
		ServerName:     "env.example.org",
		SigningKeyPath: key,
		DataDir:        "/var/lib/fedsender",
		Log:            LogConfig{Level: "debug", Format: "json"},
		NATS: NATSConfig{
			URL:       "nats://a:4222,nats://b:4222",
			Listen:    "",
			MaxStore:  512 << 20,
			MaxMemory: 2e9,
			Replicas:  3,

			Credentials:  "/etc/fedsender/nats.creds",
			NkeySeedFile: "/etc/fedsender/nats.nk",
			User:         "fedsender",
			PasswordFile: "/etc/fedsender/nats.password",
			TLS: NATSTLSConfig{CAFile: "/etc/fedsender/nats-ca.pem", CertFile: "/etc/fedsender/nats.pem",
				KeyFile: "/etc/fedsender/nats.key"},
		},
		Admin: AdminConfig{Listen: ":9000", Token: "s3cret"},
		Federation: FederationConfig{
			TLSInsecureSkipVerify: true,
			CAFile:                ca,
			IPRangeAllowlist: []netip.Prefix{
				netip.MustParsePrefix("10.1.0.0/16"),
				netip.MustParsePrefix("fd00::/8"),
			},
			IPRangeDenylist:          []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			RequestTimeout:           15 * time.Second,
			SendSlots:                12,
			ReceiptsPerRoomPerSecond: 20,
		},
		Backoff: BackoffConfig{
			MinInterval:  time.Minute,
			Multiplier:   3.5,
			MaxInterval:  24 * time.Hour,
			CatchUpAfter: 2 * time.Hour,
		},
		Queue: QueueConfig{
			Partitions:         128,
			MaxPending:         500,
			Retention:          72 * time.Hour,
			StartupWakeRate:    5,
			IdleTimeout:        30 * time.Second,
			MaxQueued:          40000,
			CheckpointInterval: 250 * time.Millisecond,
		},
		Metrics:      MetricsConfig{Listen: "0.0.0.0:9100", PerDestinationLabels: true},
		Postgres:     PostgresConfig{URL: "postgres://fedsender@db/fedsender", Schema: "fs_prod"},
		InstanceName: "fedsender-2",
		Ownership:    OwnershipConfig{LeaseTTL: 10 * time.Second, DrainTimeout: 40 * time.Second},
		Synapse: SynapseConfig{DatabaseURL: "postgres://fedsender@db/synapse", RedisURL: "redis://redis:6379/0",
			InstanceName: "fedsender2", FederationDomainWhitelist: []string{"a.example", "b.example:8448"},
			PollInterval: 250 * time.Millisecond},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", c, want)
	}
}

func TestPrecedence(t *testing.T) {
	const file = minimalYAML + `
backoff:
  min_interval: 5m
federation:
  tls_insecure_skip_verify: true
  ip_range_allowlist: [10.0.0.0/8]
`
	for _, tc := range []struct {
		name    string
		environ []string
		check   func(Config) bool
	}{
		{
			name:  "default when neither sets it",
			check: func(c Config) bool { return c.Backoff.MaxInterval == 168*time.Hour },
		},
		{
			name:  "file over default",
			check: func(c Config) bool { return c.Backoff.MinInterval == 5*time.Minute },
		},
		{
			name:    "env over file",
			environ: []string{"FEDSENDER_BACKOFF_MIN_INTERVAL=7m"},
			check:   func(c Config) bool { return c.Backoff.MinInterval == 7*time.Minute },
		},
		{
			name:    "env over default",
			environ: []string{"FEDSENDER_QUEUE_PARTITIONS=8"},
			check:   func(c Config) bool { return c.Queue.Partitions == 8 },
		},
		{
			name:    "env false over file true",
			environ: []string{"FEDSENDER_FEDERATION_TLS_INSECURE_SKIP_VERIFY=false"},
			check:   func(c Config) bool { return !c.Federation.TLSInsecureSkipVerify },
		},
		{
			name:    "empty env list clears the file's list",
			environ: []string{"FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST="},
			check:   func(c Config) bool { return len(c.Federation.IPRangeAllowlist) == 0 },
		},
		{
			name:    "env list replaces the file's list",
			environ: []string{"FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST=172.16.0.0/12"},
			check: func(c Config) bool {
				return reflect.DeepEqual(c.Federation.IPRangeAllowlist, []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")})
			},
		},
		{
			name:    "last of repeated variables wins",
			environ: []string{"FEDSENDER_QUEUE_PARTITIONS=8", "FEDSENDER_QUEUE_PARTITIONS=9"},
			check:   func(c Config) bool { return c.Queue.Partitions == 9 },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, file, tc.environ...)
			if !tc.check(c) {
				t.Errorf("unexpected result: %+v", c)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	c := mustParse(t, "", "FEDSENDER_SERVER_NAME=example.org")
	want := Default()
	want.ServerName = "example.org"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse of no file:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoad(t *testing.T) {
	path := writeFile(t, "fedsender.yaml", minimalYAML+"queue:\n  partitions: 32\n")
	c, err := Load(path, []string{"FEDSENDER_QUEUE_MAX_PENDING=7"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.Partitions != 32 || c.Queue.MaxPending != 7 {
		t.Errorf("Load: partitions %d, max_pending %d; want 32, 7", c.Queue.Partitions, c.Queue.MaxPending)
	}

	c, err = Load("", []string{"FEDSENDER_SERVER_NAME=example.org"})
	if err != nil || c.ServerName != "example.org" {
		t.Errorf("Load without a file: %+v, %v", c, err)
	}

	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, err = Load(missing, nil)
	wantErr(t, err, missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing): %v does not wrap fs.ErrNotExist", err)
	}
}

const examplePath = "../../deploy/fedsender.example.yaml"

// TestExampleFile keeps deploy/fedsender.example.yaml loadable, complete and
// in step with Default.
func TestExampleFile(t *testing.T) {
	c, err := Load(examplePath, nil)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	want := Default()
	want.ServerName = "example.org"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("the example's values differ from Default:\n got %+v\nwant %+v", c, want)
	}

	// Every setting must appear in the example, so it documents them all.
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(mustRead(t, examplePath)), &doc); err != nil {
		t.Fatal(err)
	}
	inExample := map[string]bool{}
	leafPaths(doc.Content[0], "", inExample)
	for _, s := range loadSchema().settings {
		if !inExample[s.path] {
			t.Errorf("%s: missing from %s", s.path, examplePath)
		}
	}
}

// leafPaths records in paths the path of every key of the mapping n whose
// value is not itself a mapping.
func leafPaths(n *yaml.Node, prefix string, paths map[string]bool) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		p := joinPath(prefix, n.Content[i].Value)
		if v := n.Content[i+1]; v.Kind == yaml.MappingNode {
			leafPaths(v, p, paths)
		} else {
			paths[p] = true
		}
	}
}
