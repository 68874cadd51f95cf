package e2e

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestVersionFromLinkerFlags: a release build sets the version and commit
// with -ldflags -X, which `fedsender version` then prints.
func TestVersionFromLinkerFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := filepath.Join(t.TempDir(), "fedsender")
	const pkg = "github.com/fedsender/fedsender/internal/telemetry"
	out, err := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X "+pkg+".version=v9.8.7 -X "+pkg+".commit=0123456789abcdef",
		"github.com/fedsender/fedsender/cmd/fedsender").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("fedsender version: %v\n%s", err, out)
	}
	if want := "version: v9.8.7\ncommit: 0123456789abcdef\ngo: " + runtime.Version() + "\n"; string(out) != want {
		t.Errorf("fedsender version printed %q, want %q", out, want)
	}
}
