//go:build interop

package interop

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/pki"
)

// dendriteVersion is the homeserver the tests run against.
const dendriteVersion = "v0.13.8"

var (
	dendriteOnce sync.Once
	dendritePath string
	dendriteErr  error
)

// dendriteBinary returns Dendrite's monolith binary, built with go install
// into the user's cache directory on first use (minutes on a small
// machine) and reused by every later run.
func dendriteBinary(t *testing.T) string {
	t.Helper()
	dendriteOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			dendriteErr = fmt.Errorf("no cache directory for the Dendrite binary: %w", err)
			return
		}
		dir := filepath.Join(cache, "fedsender-interop", "dendrite-"+dendriteVersion)
		dendritePath = filepath.Join(dir, "dendrite")
		if _, err := os.Stat(dendritePath); err == nil {
			return
		}
		start := time.Now()
		cmd := exec.Command("go", "install", "github.com/matrix-org/dendrite/cmd/dendrite@"+dendriteVersion)
		// go install writes the binary under a temporary name and renames
		// it, so an interrupted build leaves no half-written binary behind.
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			dendriteErr = fmt.Errorf("go install dendrite %s: %v\n%s", dendriteVersion, err, out)
			return
		}
		t.Logf("built Dendrite %s into %s in %v", dendriteVersion, dir, time.Since(start).Round(time.Second))
	})
	if dendriteErr != nil {
		t.Fatal(dendriteErr)
	}
	return dendritePath
}

// dendrite is a running Dendrite monolith on SQLite with its in-process NATS.
// Its federation listener is behind the test's front door (see front), whose
// address is Dendrite's server name; its client API is plain HTTP.
type dendrite struct {
	t          *testing.T
	serverName string // 127.0.0.1:<front door port>
	clientURL  string // http://127.0.0.1:<port>
	fedURL     string // https://127.0.0.1:<port>, Dendrite's own TLS listener
	secret     string // registration_shared_secret
	cmd        *exec.Cmd
	exited     chan struct{}
	logPath    string
}

// startDendrite starts Dendrite named serverName in a temporary directory,
// with a TLS certificate for 127.0.0.1 issued by ca, and waits until both
// its listeners answer.
func startDendrite(t *testing.T, serverName string, ca *pki.CA) *dendrite {
	t.Helper()
	bin := dendriteBinary(t)
	dir := t.TempDir()
	httpPort, httpsPort := fedsenderproc.FreePort(t), fedsenderproc.FreePort(t)
	d := &dendrite{
		t:          t,
		serverName: serverName,
		clientURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		fedURL:     fmt.Sprintf("https://127.0.0.1:%d", httpsPort),
		secret:     rand.Text(),
		exited:     make(chan struct{}),
		logPath:    filepath.Join(dir, "dendrite.log"),
	}
	certPath, keyPath := writeTLSFiles(t, dir, ca.MustLeaf(t, "127.0.0.1"))
	conf := filepath.Join(dir, "dendrite.yaml")
	writeFile(t, conf, d.config(dir))
	writeFile(t, filepath.Join(dir, "matrix_key.pem"), matrixKeyPEM(t))

	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "--config", conf,
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--https-bind-address", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		"--tls-cert", certPath, "--tls-key", keyPath)
	d.cmd.Dir = dir
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start Dendrite: %v", err)
	}
	go func() {
		d.cmd.Wait()
		logf.Close()
		close(d.exited)
	}()
	t.Cleanup(d.stop)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, u := range []string{d.clientURL + "/_matrix/client/versions", d.fedURL + "/_matrix/key/v2/server"} {
		d.waitUp(hc, u)
	}
	return d
}

// config is Dendrite's configuration: everything in dir, open to
// federation over 127.0.0.1, inbound presence on, no rate limits. SQLite
// needs a database file per component (a single connection string is for
// PostgreSQL only).
func (d *dendrite) config(dir string) string {
	db := func(name string) string {
		return fmt.Sprintf("{connection_string: %q}", "file:"+filepath.Join(dir, name+".db"))
	}
	return fmt.Sprintf(`version: 2
global:
  server_name: %q
  private_key: matrix_key.pem
  cache: {max_size_estimated: 64mb, max_age: 1h}
  trusted_third_party_id_servers: []
  presence: {enable_inbound: true, enable_outbound: true}
  report_stats: {enabled: false}
  jetstream: {storage_path: %q, topic_prefix: Dendrite}
client_api:
  registration_disabled: true
  registration_shared_secret: %q
  rate_limiting: {enabled: false}
federation_api:
  database: %s
  disable_tls_validation: true
  key_perspectives: []
  prefer_direct_fetch: true
key_server: {database: %s}
media_api: {database: %s, base_path: %q}
mscs: {database: %s}
relay_api: {database: %s}
room_server: {database: %s}
sync_api: {database: %s, search: {enabled: false}}
user_api: {account_database: %s, bcrypt_cost: 4}
logging:
  - {type: std, level: warn}
`, d.serverName, filepath.Join(dir, "jetstream"), d.secret,
		db("federationapi"), db("keyserver"), db("mediaapi"), filepath.Join(dir, "media"), db("mscs"),
		db("relayapi"), db("roomserver"), db("syncapi"), db("userapi"))
}

// waitUp polls url until it answers 200, failing with Dendrite's log if
// Dendrite exits or does not answer within two minutes (the first start
// creates every database table).
func (d *dendrite) waitUp(hc *http.Client, url string) {
	d.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-d.exited:
			d.t.Fatalf("Dendrite exited before %s answered:\n%s", url, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("Dendrite did not answer %s within 2m (last: %v):\n%s", url, err, d.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends Dendrite (it keeps nothing the next test needs) and shows its
// log when the test failed.
func (d *dendrite) stop() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Kill()
		<-d.exited
	}
	if d.t.Failed() {
		d.t.Logf("Dendrite log:\n%s", d.logTail())
	}
}

// logTail returns the end of Dendrite's log.
func (d *dendrite) logTail() string {
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 8 << 10
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return string(data)
}

// matrixKeyPEM is a fresh Dendrite signing key in its PEM format: the
// 32-byte ed25519 seed under a Key-ID header.
func matrixKeyPEM(t *testing.T) []byte {
	t.Helper()
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Headers: map[string]string{"Key-ID": "ed25519:dendrite"}, Bytes: seed})
}

// writeTLSFiles writes cert's chain and private key as PEM files into dir.
func writeTLSFiles(t *testing.T, dir string, cert tls.Certificate) (certPath, keyPath string) {
	t.Helper()
	var chain strings.Builder
	for _, der := range cert.Certificate {
		chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certPath, []byte(chain.String()))
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
	return certPath, keyPath
}

func writeFile[T string | []byte](t *testing.T, path string, data T) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
