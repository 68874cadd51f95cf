package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startNATSServer runs a real NATS server in-process, configured from conf
// in nats-server's configuration language, until the test ends. The server
// picks its port when conf says listen: 127.0.0.1:-1.
func startNATSServer(t *testing.T, conf string) *server.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return startNATSFile(t, path)
}

// startNATSFile runs a real NATS server in-process, configured from the
// file path, until the test ends.
func startNATSFile(t *testing.T, path string) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server configuration %s: %v", path, err)
	}
	opts.NoSigs, opts.NoLog = true, true
	return startNATSWith(t, opts)
}

// startNATSWith runs a real NATS server in-process with opts until the
// test ends.
func startNATSWith(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats-server not ready within 30s")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// deliversOne publishes a PDU of room to a new receiver and waits until
// the receiver has it.
func (h *harness) deliversOne(room string) {
	h.t.Helper()
	r := h.receiver(nil)
	h.publish(room, 1, r.ServerName())
	eventually(h.t, 30*time.Second, func() bool { return r.PDUCount() >= 1 }, "%s never received the PDU", r.ServerName())
}
