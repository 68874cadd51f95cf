// Package fedsenderproc helps tests that run fedsender as a real process
// (kill -9, restarts, a real homeserver): it builds the binary (and
// nats-server, for a NATS node killed -9) once per test binary, finds free
// ports for listeners that must keep their address across restarts, and
// tells which process holds a connection's socket.
package fedsenderproc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binary is a main package built once per test binary.
type binary struct {
	name string
	pkg  string
	once sync.Once
	path string
	err  error
}

func (b *binary) build() (string, error) {
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "fedsender-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, b.name)
		out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	return b.path, b.err
}

// must fails the test if the build failed.
func must(t testing.TB, path string, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	fedsender  = &binary{name: "fedsender", pkg: "github.com/fedsender/fedsender/cmd/fedsender"}
	natsServer = &binary{name: "nats-server", pkg: "github.com/nats-io/nats-server/v2"}
)

// Binary builds cmd/fedsender once and returns its path; it fails the test
// if the build fails.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := fedsender.build()
	return must(t, path, err)
}

// Build builds cmd/fedsender once and returns its path, for programs
// that are not tests (the benchmark).
func Build() (string, error) { return fedsender.build() }

// NATSServerBinary builds nats-server, at the version go.mod names, once
// and returns its path: for tests that kill -9 a NATS server.
func NATSServerBinary(t testing.TB) string {
	t.Helper()
	path, err := natsServer.build()
	return must(t, path, err)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
