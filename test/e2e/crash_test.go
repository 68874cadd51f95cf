package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
)

// binary builds cmd/fedsender once per test run.
func binary(t *testing.T) string { return fedsenderproc.Binary(t) }

// keyAndCAFiles makes a signing key and a test CA for a real fedsender
// process and writes them into dir, for signing_key_path and
// federation.ca_file.
func keyAndCAFiles(t *testing.T, dir, version string) (xmatrix.SigningKey, *pki.CA, string, string) {
	t.Helper()
	key, err := xmatrix.GenerateKey(version)
	if err != nil {
		t.Fatal(err)
	}
	ca := pki.MustCA(t)
	keyPath, caPath := filepath.Join(dir, "signing.key"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(keyPath, key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, ca, keyPath, caPath
}

func freePort(t *testing.T) int { return fedsenderproc.FreePort(t) }

// process is a real `fedsender run`.
type process = fedsenderproc.Process

// newCrashProcess writes the configuration of a real fedsender process
// (not started) that logs to a file shown when the test fails, and returns
// it with its signing key, its CA and its NATS port.
func newCrashProcess(t *testing.T) (*process, xmatrix.SigningKey, *pki.CA, int) {
	t.Helper()
	return newConfiguredProcess(t, origin, "")
}

// newConfiguredProcess is newCrashProcess sending as serverName, with more
// configuration (YAML sections) appended.
func newConfiguredProcess(t *testing.T, serverName, extra string) (*process, xmatrix.SigningKey, *pki.CA, int) {
	t.Helper()
	dir := t.TempDir()
	key, ca, keyPath, caPath := keyAndCAFiles(t, dir, "crash")
	natsPort := freePort(t)
	conf := filepath.Join(dir, "fedsender.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
signing_key_path: %s
data_dir: %s
log: {level: warn}
nats: {listen: "127.0.0.1:%d", max_store: 1GiB, max_memory: 64MiB}
admin: {listen: "127.0.0.1:0", token: t}
metrics: {listen: "127.0.0.1:0"}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 5s
queue: {partitions: 8, checkpoint_interval: 100ms}
%s`, serverName, keyPath, filepath.Join(dir, "data"), natsPort, caPath, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return fedsenderproc.NewProcess(t, dir, "fedsender", conf), key, ca, natsPort
}

func TestKill9UnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	p, key, ca, natsPort := newCrashProcess(t)
	var rs []*receiver.Receiver
	var dests []string
	for range 3 {
		r := receiver.Start(t, receiver.Options{Origin: origin, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
			Cert: ca.MustLeaf(t, "127.0.0.1")})
		rs = append(rs, r)
		dests = append(dests, r.ServerName())
	}

	p.Start()
	nc, js, pub := publisherOf(t, natsPort)

	const total = 3000
	want := map[string][]string{}
	for i := range total {
		room := fmt.Sprintf("!room%d:origin.test", i%10)
		id := fmt.Sprintf("$crash-%d", i)
		want[room] = append(want[room], id)
		env, _ := json.Marshal(streams.Envelope{RoomID: room, EventID: id, Destinations: dests,
			PDU: json.RawMessage(fmt.Sprintf(`{"event_id":%q,"room_id":%q,"n":%d}`, id, room, i))})
		if _, err := pub.PublishAsync(env); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not complete")
	}

	// Kill mid-delivery, with transactions in flight.
	eventually(t, 60*time.Second, func() bool { return rs[0].PDUCount() >= total/5 }, "no progress before the kill: %d", rs[0].PDUCount())
	p.Kill9()
	atKill := []int{rs[0].PDUCount(), rs[1].PDUCount(), rs[2].PDUCount()}
	t.Logf("delivered at the kill: %v of %d each", atKill, total)
	if atKill[0] >= total && atKill[1] >= total && atKill[2] >= total {
		t.Fatal("everything was delivered before the kill: the test proves nothing; publish more")
	}
	nc.Close()

	p.Start()
	for _, r := range rs {
		eventually(t, 90*time.Second, func() bool { return uniqueCount(r) >= total }, "%s: %d of %d PDUs after kill -9 and restart", r.ServerName(), uniqueCount(r), total)
		inOrder(t, r, want)
	}
	t.Logf("redelivered after the crash: %d, %d, %d", rs[0].RedeliveredPDUs(), rs[1].RedeliveredPDUs(), rs[2].RedeliveredPDUs())
}

// publisherOf connects to a real fedsender's NATS server once its streams
// exist, and returns the connection (closed when the test ends), its
// JetStream context and a publisher.
func publisherOf(t *testing.T, natsPort int) (*nats.Conn, jetstream.JetStream, *streams.Publisher) {
	t.Helper()
	nc := connectWithin(t, fmt.Sprintf("nats://127.0.0.1:%d", natsPort), 60*time.Second)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, streams.NewPublisher(js)
}

func connectWithin(t *testing.T, url string, within time.Duration) *nats.Conn {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			// Wait until fedsender has created its streams.
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.Stream(ctx, streams.PDUStream)
			cancel()
			if err == nil {
				return nc
			}
			nc.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("fedsender's NATS server at %s not ready within %v: %v", url, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
