package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/pki"
)

// securedNATS is a real nats-server run from the shipped sample
// configuration deploy/nats/nats-server.conf: mutual TLS, one account
// with fedsender's user (password and nkey), a homeserver and an admin
// user, each with the shipped permissions.
type securedNATS struct {
	url                  string // tls://127.0.0.1:port
	dir                  string
	caFile               string // the CA of the server's and clients' certificates
	certFile, keyFile    string // a client certificate
	passwordFile         string // fedsender's password
	seedFile             string // fedsender's nkey seed
	synapsePW, adminPW   string
	fedsenderPW, seedPub string
}

func startSecuredNATS(t *testing.T) *securedNATS {
	t.Helper()
	dir := t.TempDir()
	ca := pki.MustCA(t)
	s := &securedNATS{dir: dir, caFile: filepath.Join(dir, "ca.pem"),
		fedsenderPW: "fedsender-pw", synapsePW: "synapse-pw", adminPW: "admin-pw"}
	writeFile(t, s.caFile, string(ca.PEM()))
	serverCert, serverKey := pki.WritePEM(t, dir, "server", ca.MustLeaf(t, "127.0.0.1"))
	s.certFile, s.keyFile = pki.WritePEM(t, dir, "client", ca.MustClientLeaf(t, "fedsender"))
	s.passwordFile = filepath.Join(dir, "fedsender.password")
	writeFile(t, s.passwordFile, s.fedsenderPW+"\n")
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	s.seedPub, _ = user.PublicKey()
	s.seedFile = filepath.Join(dir, "fedsender.nk")
	writeFile(t, s.seedFile, string(seed))

	sample, err := os.ReadFile("../../deploy/nats/nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	perms, err := os.ReadFile("../../deploy/nats/permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "permissions.conf"), string(perms))
	conf := strings.NewReplacer(
		"listen: 0.0.0.0:4222", `listen: "127.0.0.1:-1"`,
		"/var/lib/nats", filepath.Join(dir, "jetstream"),
		"/etc/nats/tls/server.pem", serverCert,
		"/etc/nats/tls/server-key.pem", serverKey,
		"/etc/nats/tls/ca.pem", s.caFile,
		"<fedsender password>", s.fedsenderPW,
		"<fedsender nkey>", s.seedPub,
		"<synapse password>", s.synapsePW,
		"<admin password>", s.adminPW,
	).Replace(string(sample))
	if strings.Contains(conf, `"<`) {
		t.Fatalf("a placeholder of the sample configuration is left:\n%s", conf)
	}
	path := filepath.Join(dir, "nats-server.conf")
	writeFile(t, path, conf)
	ns := startNATSFile(t, path)
	s.url = "tls://" + ns.Addr().String()
	return s
}

// clientTLS is the TLS of every client of securedNATS.
func (s *securedNATS) clientTLS() config.NATSTLSConfig {
	return config.NATSTLSConfig{CAFile: s.caFile, CertFile: s.certFile, KeyFile: s.keyFile}
}

// connect logs in as a user of the sample configuration.
func (s *securedNATS) connect(t *testing.T, user, password string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.url, nats.UserInfo(user, password), nats.RootCAs(s.caFile), nats.ClientCert(s.certFile, s.keyFile))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestNATSLoginMethods: fedsender logs in to a real nats-server secured
// as the shipped sample configuration says (mutual TLS, an account with
// per-user permissions), with a password file or an nkey seed; a
// homeserver with only its own permissions publishes, fedsender delivers,
// and an admin client with only its own permissions gets the admin API's
// answer over NATS.
func TestNATSLoginMethods(t *testing.T) {
	s := startSecuredNATS(t)
	password := func(n *config.NATSConfig) { n.User, n.PasswordFile = "fedsender", s.passwordFile }
	for _, tc := range []struct {
		name     string
		login    func(*config.NATSConfig)
		postgres bool // the PostgreSQL read model, whose consumers acknowledge
	}{
		{"password file", password, false},
		{"nkey seed file", func(n *config.NATSConfig) { n.NkeySeedFile = s.seedFile }, false},
		{"password file, PostgreSQL read model", password, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *config.Config) {
				c.NATS.URL, c.NATS.TLS = s.url, s.clientTLS()
				tc.login(&c.NATS)
				if tc.postgres {
					srv := pgtest.Own(t)
					c.Postgres.URL, c.Postgres.Schema = srv.URL, pgtest.Schema(t, srv.URL)
				}
			})
			r := h.receiver(nil)

			js, err := jetstream.New(s.connect(t, "synapse", s.synapsePW))
			if err != nil {
				t.Fatal(err)
			}
			env, _ := json.Marshal(streams.Envelope{RoomID: "!auth:origin.test", EventID: "$auth-" + tc.name,
				PDU: json.RawMessage(`{"event_id":"$auth","room_id":"!auth:origin.test"}`), Destinations: []string{r.ServerName()}})
			if _, _, err := streams.NewPublisher(js).Publish(t.Context(), env); err != nil {
				t.Fatalf("the homeserver user could not publish: %v", err)
			}
			eventually(t, 30*time.Second, func() bool { return r.PDUCount() >= 1 }, "%s never received the PDU", r.ServerName())

			// EDUs too: the homeserver publishes a to-device message and a
			// "server is up" signal, and fedsender may keep the EDU offset
			// (and the pending count) of a destination that acknowledged it.
			edu, _ := json.Marshal(streams.EDUEnvelope{EDUType: "m.direct_to_device",
				Content: json.RawMessage(toDeviceContent("auth-" + tc.name)), Destinations: []string{r.ServerName()}})
			if _, _, err := streams.NewPublisher(js).PublishWithID(t.Context(), edu, "auth-"+tc.name); err != nil {
				t.Fatalf("the homeserver user could not publish an EDU: %v", err)
			}
			if err := js.Conn().Publish(streams.ServerUpSubject, []byte(`{"destination":"`+r.ServerName()+`"}`)); err != nil {
				t.Fatalf("the homeserver user could not publish server_up: %v", err)
			}
			if err := js.Conn().Flush(); err != nil || js.Conn().LastError() != nil {
				t.Fatalf("the homeserver user could not publish server_up: %v %v", err, js.Conn().LastError())
			}
			eventually(t, 30*time.Second, func() bool { return len(eduField(r, "m.direct_to_device", "message_id")) >= 1 },
				"%s never received the to-device message", r.ServerName())
			eduOffsets, err := h.js.KeyValue(t.Context(), streams.EDUOffsetBucket)
			if err != nil {
				t.Fatal(err)
			}
			key := streams.OffsetKey(streams.Partition(r.ServerName(), h.cfg.Queue.Partitions), r.ServerName())
			eventually(t, 30*time.Second, func() bool {
				e, err := eduOffsets.Get(t.Context(), key)
				return err == nil && string(e.Value()) != "0"
			}, "fedsender never saved %s's EDU offset under the shipped permissions", r.ServerName())

			admin := s.connect(t, "admin", s.adminPW)
			var answer struct {
				Total int `json:"total"`
			}
			eventually(t, 30*time.Second, func() bool {
				msg, err := admin.Request(streams.AdminSubject("list"), []byte(`{}`), 5*time.Second)
				return err == nil && json.Unmarshal(msg.Data, &answer) == nil && answer.Total >= 1
			}, "the admin user never got a list of destinations over NATS (last: %+v)", answer)

			// The homeserver's permissions stop at fedsender.pdu.
			synapse := s.connect(t, "synapse", s.synapsePW)
			if _, err := synapse.Request(streams.AdminSubject("list"), []byte(`{}`), 2*time.Second); err == nil {
				t.Error("the homeserver user could call the admin API")
			}
		})
	}
}

// TestNATSLoginRefused: a wrong password or a server certificate from an
// unknown CA stop fedsender at start with an error that names nats.url
// (without secrets) and the cause.
func TestNATSLoginRefused(t *testing.T) {
	s := startSecuredNATS(t)
	wrong := filepath.Join(s.dir, "wrong.password")
	writeFile(t, wrong, "wr0ng-pa55\n")
	otherCA := filepath.Join(s.dir, "other-ca.pem")
	writeFile(t, otherCA, string(pki.MustCA(t).PEM()))
	for _, tc := range []struct {
		name   string
		modify func(*config.NATSConfig)
		want   string
	}{
		{"wrong password", func(n *config.NATSConfig) { n.User, n.PasswordFile = "fedsender", wrong }, "Authorization Violation"},
		{"password in the URL", func(n *config.NATSConfig) {
			n.URL = strings.Replace(s.url, "tls://", "tls://fedsender:wr0ng-pa55@", 1)
		}, "Authorization Violation"},
		{"unknown CA", func(n *config.NATSConfig) {
			n.User, n.PasswordFile = "fedsender", s.passwordFile
			n.TLS.CAFile = otherCA
		}, "certificate signed by unknown authority"},
		{"no client certificate", func(n *config.NATSConfig) {
			n.User, n.PasswordFile = "fedsender", s.passwordFile
			n.TLS.CertFile, n.TLS.KeyFile = "", ""
		}, "tls: certificate required|tls error: connection closed by remote"}, // as the handshake's timing falls
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.ServerName, cfg.DataDir = origin, t.TempDir()
			cfg.Admin.Listen, cfg.Metrics.Listen = "", ""
			cfg.NATS.URL, cfg.NATS.TLS = s.url, s.clientTLS()
			tc.modify(&cfg.NATS)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("test configuration: %v", err)
			}
			err := runUntilStarted(t, cfg)
			if err == nil {
				t.Fatal("fedsender started")
			}
			msg := err.Error()
			t.Logf("fedsender: %s", msg)
			for _, want := range []string{"nats.url: connect to tls://", "127.0.0.1", tc.want} {
				if !slices.ContainsFunc(strings.Split(want, "|"), func(w string) bool { return strings.Contains(msg, w) }) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "wr0ng") || strings.Contains(msg, s.fedsenderPW) {
				t.Errorf("error %q shows a password", msg)
			}
		})
	}
}

// runUntilStarted runs fedsender with cfg and returns the error it stopped
// with, or nil once it is ready (then stopped).
func runUntilStarted(t *testing.T, cfg config.Config) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ready := make(chan *service.Service, 1)
	done := make(chan error, 1)
	log := slog.New(slog.DiscardHandler)
	go func() { done <- service.Run(ctx, cfg, service.Deps{Log: log, Ready: ready}) }()
	select {
	case <-ready:
		cancel()
		<-done
		return nil
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("fedsender neither started nor failed within 60s")
		return nil
	}
}

// TestNATSLoginCommands: fedsender publish and fedsender destinations log
// in with the configuration's nats.* settings, to the secured sample
// server.
func TestNATSLoginCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	s := startSecuredNATS(t)
	h := newHarness(t, func(c *config.Config) {
		c.NATS.URL, c.NATS.TLS = s.url, s.clientTLS()
		c.NATS.User, c.NATS.PasswordFile = "fedsender", s.passwordFile
	})
	r := h.receiver(nil)
	dir := t.TempDir()
	conf := filepath.Join(dir, "fedsender.yaml")
	writeFile(t, conf, "server_name: origin.test\ndata_dir: "+filepath.Join(dir, "data")+`
nats:
  url: `+s.url+`
  user: fedsender
  password_file: `+s.passwordFile+`
  tls: {ca_file: `+s.caFile+`, cert_file: `+s.certFile+`, key_file: `+s.keyFile+`}
`)
	envelope := filepath.Join(dir, "pdu.jsonl")
	writeFile(t, envelope, `{"room_id":"!cmd:origin.test","event_id":"$cmd","destinations":["`+r.ServerName()+
		`"],"pdu":{"event_id":"$cmd","room_id":"!cmd:origin.test"}}`+"\n")
	if code, out := runBinary(t, "publish", "--config", conf, "--file", envelope); code != 0 || !strings.Contains(out, "published 1 envelopes") {
		t.Fatalf("fedsender publish: exit %d:\n%s", code, out)
	}
	eventually(t, 30*time.Second, func() bool { return r.PDUCount() >= 1 }, "%s never received the published PDU", r.ServerName())

	for _, args := range [][]string{
		{"destinations", "list", "--config", conf},
		{"destinations", "list", "--server", s.url, "--config", conf},
	} {
		var out string
		eventually(t, 30*time.Second, func() bool {
			var code int
			code, out = runBinary(t, args...)
			return code == 0 && strings.Contains(out, r.ServerName())
		}, "%s never listed %s:\n%s", strings.Join(args, " "), r.ServerName(), out)
	}
	if code, out := runBinary(t, "destinations", "list", "--server", s.url); code == 0 {
		t.Errorf("fedsender destinations without a login or client certificate got in:\n%s", out)
	}
}

// TestShippedPermissionsCoverEveryBucket: the fedsender user of the shipped
// NATS permissions may write every KV bucket fedsender creates (a bucket
// missing there fails only on a secured server, in production).
func TestShippedPermissionsCoverEveryBucket(t *testing.T) {
	perms, err := os.ReadFile("../../deploy/nats/permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range streams.KVConfigs(streams.Options{}) {
		if want := `"$KV.` + b.Bucket + `.>"`; !strings.Contains(string(perms), want) {
			t.Errorf("deploy/nats/permissions.conf does not let fedsender write the bucket %s (%s)", b.Bucket, want)
		}
	}
}
