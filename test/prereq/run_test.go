package prereq_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/test/prereq"
)

// runCrossCheck runs fedsender's signature cross-check as `go tool task
// test` runs the tests (through test/summary), with extra environment, and
// returns the output's lines and the exit status.
func runCrossCheck(t *testing.T, env ...string) ([]string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "run", "./test/summary",
		"-count=1", "-run", "^TestCrossCheckSignedJSON$", "./internal/xmatrix")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("go run ./test/summary: %v\n%s", err, out)
	}
	return strings.Split(string(out), "\n"), code
}

// TestMissingPythonFailsTheRun: without Synapse's Python libraries the
// cross-check fails, naming the command that installs them, instead of
// passing as "ok" with the check skipped.
func TestMissingPythonFailsTheRun(t *testing.T) {
	python := filepath.Join(t.TempDir(), "python3")
	writeExecutable(t, python, failingPython)
	lines, code := runCrossCheck(t, prereq.EnvPython+"="+python, prereq.EnvSkip+"=")
	out := strings.Join(lines, "\n")
	if code != 1 || !slices.Contains(lines, "0 passed, 1 failed, 0 skipped") {
		t.Fatalf("exit status %d with a python that cannot import signedjson, want 1 and one failure:\n%s", code, out)
	}
	for _, want := range []string{
		python + " cannot import them (exit status 1: ModuleNotFoundError: No module named 'signedjson')",
		python + " -m pip install signedjson canonicaljson unpaddedbase64",
		"or skip the tests that need them: FEDSENDER_TEST_SKIP=python",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the failure does not say %q:\n%s", want, out)
		}
	}
}

// TestOptedOutSkipIsCounted: FEDSENDER_TEST_SKIP=python skips the
// cross-check, and the run's last lines count it and say why.
func TestOptedOutSkipIsCounted(t *testing.T) {
	lines, code := runCrossCheck(t, prereq.EnvSkip+"=python")
	want := []string{
		"0 passed, 0 failed, 1 skipped",
		"SKIP github.com/fedsender/fedsender/internal/xmatrix TestCrossCheckSignedJSON: crosscheck_test.go:",
		"needs Synapse's signing libraries for Python (signedjson, canonicaljson, unpaddedbase64); skipped because FEDSENDER_TEST_SKIP=python",
	}
	last := lines[max(0, len(lines)-3):]
	if code != 0 || last[0] != want[0] || !strings.HasPrefix(last[1], want[1]) || !strings.HasSuffix(last[1], want[2]) || last[2] != "" {
		t.Errorf("exit status %d, last lines:\n%s\nwant 0 and:\n%s\n%s...%s", code, strings.Join(last, "\n"), want[0], want[1], want[2])
	}
}

// recorder is a test that Require may fail or skip.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// require runs e.Require(r, p) as a test would, to its end or its Goexit.
func require(e prereq.Env, p prereq.Prerequisite) (r *recorder, where string) {
	r = new(recorder)
	done := make(chan struct{})
	go func() {
		defer close(done)
		where = e.Require(r, p)
	}()
	<-done
	return r, where
}

func TestRequire(t *testing.T) {
	m := newMachine(t, "apt-get")
	m.env.Root = true
	r, _ := require(m.env, prereq.Redis)
	if want := "redis missing: the Redis server (redis-server): not on PATH\n" +
		"install them: apt-get update && apt-get install -y redis-server\n" +
		"or skip the tests that need them: FEDSENDER_TEST_SKIP=redis"; r.fatal != want || r.skip != "" {
		t.Errorf("missing redis-server: failed with %q, skipped with %q; want to fail with %q", r.fatal, r.skip, want)
	}

	m.env.Skip = "redis"
	r, _ = require(m.env, prereq.Redis)
	if want := "needs the Redis server (redis-server); skipped because FEDSENDER_TEST_SKIP=redis"; r.skip != want || r.fatal != "" {
		t.Errorf("opted out: skipped with %q, failed with %q; want to skip with %q", r.skip, r.fatal, want)
	}

	m.env.Skip = "redis-server"
	r, _ = require(m.env, prereq.Redis)
	if want := `FEDSENDER_TEST_SKIP=redis-server: "redis-server" is not a prerequisite (python, postgres, redis, examples)`; r.fatal != want {
		t.Errorf("a misspelt opt-out: failed with %q, want %q", r.fatal, want)
	}

	m.env.Skip = ""
	writeExecutable(t, filepath.Join(m.bin, "redis-server"), "#!/bin/sh\n")
	r, where := require(m.env, prereq.Redis)
	if r.fatal != "" || r.skip != "" || where != filepath.Join(m.bin, "redis-server") {
		t.Errorf("present: returned %q, failed with %q, skipped with %q", where, r.fatal, r.skip)
	}
}
