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

	"github.com/nats-io/jwt/v2"
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

// TestNATSCredentialsFile: fedsender logs in with a credentials file (user
// JWT and seed) to a nats-server in operator mode, and delivers.
func TestNATSCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	operator, _ := nkeys.CreateOperator()
	operatorPub, _ := operator.PublicKey()
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()

	oc := jwt.NewOperatorClaims(operatorPub)
	oc.SystemAccount = sysPub
	operatorJWT := encode(t, oc, operator)
	sysJWT := encode(t, jwt.NewAccountClaims(sysPub), operator)
	ac := jwt.NewAccountClaims(accountPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accountJWT := encode(t, ac, operator)
	userJWT := encode(t, jwt.NewUserClaims(userPub), account)
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(dir, "fedsender.creds")
	writeFile(t, credsFile, string(creds))

	path := filepath.Join(dir, "nats-server.conf")
	writeFile(t, path, `listen: "127.0.0.1:-1"
server_name: jwt
jetstream { store_dir: "`+filepath.Join(dir, "js")+`" }
operator: `+operatorJWT+`
system_account: `+sysPub+`
resolver: MEMORY
resolver_preload: {
  `+sysPub+`: `+sysJWT+`
  `+accountPub+`: `+accountJWT+`
}
`)
	ns := startNATSFile(t, path)
	url := "nats://" + ns.Addr().String()

	h := newHarness(t, func(c *config.Config) {
		c.NATS.URL, c.NATS.Credentials = url, credsFile
	})
	h.deliversOne("!creds:origin.test")

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("the operator-mode server let a client in without credentials: the test proves nothing")
	}
}

// deliversOne publishes a PDU of room to a new receiver and waits until
// the receiver has it.
func (h *harness) deliversOne(room string) {
	h.t.Helper()
	r := h.receiver(nil)
	h.publish(room, 1, r.ServerName())
	eventually(h.t, 30*time.Second, func() bool { return r.PDUCount() >= 1 }, "%s never received the PDU", r.ServerName())
}

func encode(t *testing.T, c interface {
	Encode(nkeys.KeyPair) (string, error)
}, signer nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEmbeddedNATSLogin: the embedded server accepts only the configured
// login (from every interface, or with TLS), and fedsender, logged in with
// it, delivers.
func TestEmbeddedNATSLogin(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "nats.password")
	writeFile(t, pwFile, "embedded-pw\n")
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	seedFile := filepath.Join(dir, "nats.nk")
	writeFile(t, seedFile, string(seed))
	ca := pki.MustCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, string(ca.PEM()))
	certFile, keyFile := pki.WritePEM(t, dir, "nats", ca.MustLeaf(t, "127.0.0.1"))

	t.Run("all interfaces, password", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config) {
			c.NATS.Listen = "0.0.0.0:0"
			c.NATS.User, c.NATS.PasswordFile = "fedsender", pwFile
		})
		h.deliversOne("!embedded:origin.test")
		_, err := nats.Connect(h.svc.NATSURL)
		if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("a client without login: %v, want Authorization Violation", err)
		}
		if _, err := nats.Connect(h.svc.NATSURL, nats.UserInfo("fedsender", "wrong")); err == nil {
			t.Error("a client with a wrong password got in")
		}
	})

	t.Run("TLS, nkey", func(t *testing.T) {
		h := newHarness(t, func(c *config.Config) {
			c.NATS.NkeySeedFile = seedFile
			c.NATS.TLS = config.NATSTLSConfig{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
		})
		h.deliversOne("!embedded:origin.test")
		login, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		_, err = nats.Connect(h.svc.NATSURL, login)
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("a client that does not trust the CA: %v, want an unknown authority", err)
		}
		_, err = nats.Connect(h.svc.NATSURL, nats.RootCAs(caFile))
		if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("a TLS client without login: %v, want Authorization Violation", err)
		}
	})
}

// TestEmbeddedNATSRefusesOpenListener: the real binary refuses to run an
// embedded server that listens beyond loopback without a login.
func TestEmbeddedNATSRefusesOpenListener(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "fedsender.yaml")
	writeFile(t, conf, "server_name: origin.test\ndata_dir: "+filepath.Join(dir, "data")+
		"\nnats: {listen: \"0.0.0.0:0\"}\nadmin: {listen: \"\"}\nmetrics: {listen: \"\"}\n")
	code, out := runBinary(t, "run", "--config", conf)
	const want = `nats.listen: "0.0.0.0:0" is reachable from other hosts, so the embedded server requires authentication`
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("exit %d, want 1 and %q:\n%s", code, want, out)
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
