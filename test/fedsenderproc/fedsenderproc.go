// Package fedsenderproc helps tests that run fedsender as a real process
// (kill -9, restarts, a real homeserver): it builds the binary once per test
// binary and finds free ports for listeners that must keep their address
// across restarts.
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

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/fedsender once and returns its path; it fails the test
// if the build fails.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fedsender-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "fedsender")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/fedsender/fedsender/cmd/fedsender").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
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
