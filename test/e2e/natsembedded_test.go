package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/test/pki"
)

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
