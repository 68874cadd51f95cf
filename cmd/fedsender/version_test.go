package main

import (
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `fedsender version` and `fedsender --version` print the
// version, the commit and the Go version the binary was built with.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		t.Run(arg, func(t *testing.T) {
			code, out, errs := runCmd(t, "", arg)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "version: ") || !strings.HasPrefix(lines[1], "commit: ") ||
				lines[2] != "go: "+runtime.Version() {
				t.Errorf("output %q, want the lines version: V, commit: C, go: %s", out, runtime.Version())
			}
		})
	}
}
