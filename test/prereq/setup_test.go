package prereq_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/test/prereq"
)

// machine is a pretend machine in a temporary directory: a Python without
// the libraries, no PostgreSQL, no Redis, and curl and jq. Its apt-get (when there is one)
// writes its arguments to aptLog and, when installs is true, installs all
// three.
type machine struct {
	env    prereq.Env
	bin    string
	aptLog string
}

const failingPython = "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'signedjson'\" >&2\nexit 1\n"

func newMachine(t *testing.T, tools ...string) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{bin: filepath.Join(dir, "bin"), aptLog: filepath.Join(dir, "apt.log")}
	m.env = prereq.Env{
		Python:       filepath.Join(dir, "python3"),
		DebianPython: filepath.Join(dir, "python3"),
		PostgresDirs: filepath.Join(dir, "postgresql", "*", "bin"),
		Path:         m.bin,
	}
	writeExecutable(t, m.env.Python, failingPython)
	if err := os.Mkdir(m.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"curl", "jq"} {
		writeExecutable(t, filepath.Join(m.bin, tool), "#!/bin/sh\n")
	}
	for _, tool := range tools {
		switch tool {
		case "apt-get":
			m.apt(t, true)
		case "apt-get that installs nothing":
			m.apt(t, false)
		case "sudo":
			writeExecutable(t, filepath.Join(m.bin, "sudo"), "#!/bin/sh\nexit 1\n")
		}
	}
	return m
}

func (m *machine) apt(t *testing.T, installs bool) {
	t.Helper()
	script := "#!/bin/sh\necho \"$*\" >> " + m.aptLog + "\n"
	if installs {
		pg := filepath.Join(filepath.Dir(m.env.Python), "postgresql", "16", "bin")
		script += `if [ "$1" = install ]; then
printf '#!/bin/sh\nexit 0\n' > ` + m.env.Python + `
mkdir -p ` + pg + `
for f in ` + pg + `/initdb ` + pg + `/pg_ctl ` + m.bin + `/redis-server; do printf '#!/bin/sh\n' > $f; chmod 755 $f; done
fi
`
	}
	writeExecutable(t, filepath.Join(m.bin, "apt-get"), script)
}

func writeExecutable(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// aptCalls is what apt-get was run with, one line a call.
func (m *machine) aptCalls(t *testing.T) []string {
	t.Helper()
	log, err := os.ReadFile(m.aptLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(log)), "\n")
}

const allPackages = "python3-signedjson python3-canonicaljson python3-unpaddedbase64 postgresql redis-server"

func TestSetupInstallsAsRootWithAptGet(t *testing.T) {
	m := newMachine(t, "apt-get")
	m.env.Root = true
	var out bytes.Buffer
	if err := prereq.Setup(context.Background(), m.env, &out); err != nil {
		t.Fatalf("set-up failed: %v\n%s", err, out.String())
	}
	want := []string{"update -qq", "install -y -qq " + allPackages}
	if got := m.aptCalls(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("apt-get ran with %q, want %q", got, want)
	}
	for _, line := range []string{
		"installing " + allPackages + " with apt-get",
		"python   " + m.env.Python,
		"redis    " + filepath.Join(m.bin, "redis-server"),
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("the set-up does not say %q:\n%s", line, out.String())
		}
	}
}

func TestSetupStopsWithTheCommandToRun(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tools []string
		root  bool
		skip  string
		want  []string
	}{{
		name: "not root, with sudo", tools: []string{"apt-get", "sudo"},
		want: []string{"install them: sudo apt-get update && sudo apt-get install -y " + allPackages},
	}, {
		name: "not root, without sudo", tools: []string{"apt-get"},
		want: []string{"install them as root: apt-get update && apt-get install -y " + allPackages},
	}, {
		name: "no apt-get", root: true,
		want: []string{"install what the Debian packages " + allPackages + " provide (this machine has no apt-get)"},
	}, {
		name: "apt-get installs nothing", tools: []string{"apt-get that installs nothing"}, root: true,
		want: []string{"install them: apt-get update && apt-get install -y " + allPackages},
	}, {
		name: "some opted out", tools: []string{"apt-get"}, skip: "python, redis",
		want: []string{"install them as root: apt-get update && apt-get install -y postgresql\n" +
			"or skip the tests that need them: FEDSENDER_TEST_SKIP=postgres"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, tc.tools...)
			m.env.Root, m.env.Skip = tc.root, tc.skip
			var out bytes.Buffer
			err := prereq.Setup(context.Background(), m.env, &out)
			if err == nil {
				t.Fatalf("the set-up passed without the prerequisites:\n%s", out.String())
			}
			msg := err.Error()
			if tc.skip == "" {
				tc.want = append(tc.want,
					"python missing: Synapse's signing libraries for Python (signedjson, canonicaljson, unpaddedbase64): "+
						m.env.Python+" cannot import them (exit status 1: ModuleNotFoundError: No module named 'signedjson')",
					"postgres missing: the PostgreSQL server binaries (initdb, pg_ctl): none in pg_config --bindir or "+m.env.PostgresDirs,
					"redis missing: the Redis server (redis-server): not on PATH",
					"or skip the tests that need them: FEDSENDER_TEST_SKIP=python,postgres,redis")
			}
			for _, want := range tc.want {
				if !strings.Contains(msg, want) {
					t.Errorf("the error does not say %q:\n%s", want, msg)
				}
			}
			if got := m.aptCalls(t); tc.root && len(tc.tools) > 0 {
				if len(got) != 2 {
					t.Errorf("apt-get ran with %q, want an update and an install", got)
				}
			} else if got != nil {
				t.Errorf("apt-get ran (%q) where it may not", got)
			}
		})
	}
}

func TestSetupReportsOptedOut(t *testing.T) {
	m := newMachine(t)
	m.env.Skip = "python,postgres,redis"
	var out bytes.Buffer
	if err := prereq.Setup(context.Background(), m.env, &out); err != nil {
		t.Fatal(err)
	}
	if want := "python   skipped: FEDSENDER_TEST_SKIP=python,postgres,redis\n"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("the set-up says:\n%s\nwant it to start with %q", out.String(), want)
	}
}

func TestSetupRefusesUnknownOptOut(t *testing.T) {
	m := newMachine(t)
	m.env.Skip = "python,pgsql"
	err := prereq.Setup(context.Background(), m.env, new(bytes.Buffer))
	want := `FEDSENDER_TEST_SKIP=python,pgsql: "pgsql" is not a prerequisite (python, postgres, redis, examples)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}
