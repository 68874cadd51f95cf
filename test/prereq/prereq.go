package prereq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Environment variables the tests read.
const (
	// EnvSkip lists prerequisites whose tests are skipped, comma-separated
	// ("python,postgres"); the only way to skip a test for lack of one.
	EnvSkip = "FEDSENDER_TEST_SKIP"
	// EnvPython names the interpreter with Synapse's libraries, when it is
	// not Debian's /usr/bin/python3 (a virtualenv, another system).
	EnvPython = "FEDSENDER_TEST_PYTHON"
)

// SystemPython is Debian's interpreter, the one apt installs the libraries
// for; a python3 earlier on PATH may be another one without them.
const SystemPython = "/usr/bin/python3"

// ErrMissing: a prerequisite is not on this machine.
var ErrMissing = errors.New("missing")

// A Prerequisite is one thing the tests need from the machine.
type Prerequisite struct {
	// Name is the word FEDSENDER_TEST_SKIP takes.
	Name string
	// What it is, for people.
	What string
	// Debian lists the packages that provide it.
	Debian []string
	find   func(Env) (string, error)
}

// The prerequisites.
var (
	Python = Prerequisite{
		Name:   "python",
		What:   "Synapse's signing libraries for Python (signedjson, canonicaljson, unpaddedbase64)",
		Debian: []string{"python3-signedjson", "python3-canonicaljson", "python3-unpaddedbase64"},
		find:   findPython,
	}
	Postgres = Prerequisite{
		Name:   "postgres",
		What:   "the PostgreSQL server binaries (initdb, pg_ctl)",
		Debian: []string{"postgresql"},
		find:   findPostgres,
	}
	Redis = Prerequisite{
		Name:   "redis",
		What:   "the Redis server (redis-server)",
		Debian: []string{"redis-server"},
		find:   findRedis,
	}
	Examples = Prerequisite{
		Name:   "examples",
		What:   "curl and jq, which the examples of README.md and docs/ use (test/docs runs them)",
		Debian: []string{"curl", "jq"},
		find:   findExampleTools,
	}
)

// All is every prerequisite, in the order they are checked.
func All() []Prerequisite { return []Prerequisite{Python, Postgres, Redis, Examples} }

// Env is where the prerequisites are looked for, and what may be done to
// install them. [Local] is this machine.
type Env struct {
	// Python is the interpreter that must import the libraries.
	Python string
	// DebianPython is the one Debian's packages install them for.
	DebianPython string
	// PostgresDirs is a glob of directories holding the server binaries,
	// tried after pg_config --bindir.
	PostgresDirs string
	// Path is the search path for pg_config, redis-server, apt-get and sudo.
	Path string
	// Root: packages may be installed.
	Root bool
	// Skip is the value of FEDSENDER_TEST_SKIP.
	Skip string
}

// Local describes this machine and the test environment variables.
func Local() Env {
	e := Env{
		Python:       SystemPython,
		DebianPython: SystemPython,
		PostgresDirs: "/usr/lib/postgresql/*/bin",
		Path:         os.Getenv("PATH"),
		Root:         os.Geteuid() == 0,
		Skip:         os.Getenv(EnvSkip),
	}
	if p := os.Getenv(EnvPython); p != "" {
		e.Python = p
	}
	return e
}

// Find returns where p is (a path), or an error wrapping [ErrMissing] that
// says what was looked for.
func (e Env) Find(p Prerequisite) (string, error) {
	where, err := p.find(e)
	if err != nil {
		return "", fmt.Errorf("%s %w: %s: %w", p.Name, ErrMissing, p.What, err)
	}
	return where, nil
}

// Skipped reports the prerequisites FEDSENDER_TEST_SKIP names, or an error
// naming a word that is not one.
func (e Env) Skipped() (map[string]bool, error) {
	skip := map[string]bool{}
	for word := range strings.SplitSeq(e.Skip, ",") {
		word = strings.TrimSpace(word)
		if word == "" {
			continue
		}
		if !slices.ContainsFunc(All(), func(p Prerequisite) bool { return p.Name == word }) {
			return nil, fmt.Errorf("%s=%s: %q is not a prerequisite (%s)", EnvSkip, e.Skip, word, strings.Join(names(All()), ", "))
		}
		skip[word] = true
	}
	return skip, nil
}

func names(ps []Prerequisite) []string {
	var ns []string
	for _, p := range ps {
		ns = append(ns, p.Name)
	}
	return ns
}

func findPython(e Env) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.Python, "-c",
		"import signedjson.key, signedjson.sign, canonicaljson, unpaddedbase64").CombinedOutput()
	if err != nil {
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[0] != "" {
			err = fmt.Errorf("%w: %s", err, lines[len(lines)-1])
		}
		return "", fmt.Errorf("%s cannot import them (%w)", e.Python, err)
	}
	return e.Python, nil
}

func findPostgres(e Env) (string, error) {
	var dirs []string
	if pgConfig := e.look("pg_config"); pgConfig != "" {
		if out, err := exec.Command(pgConfig, "--bindir").Output(); err == nil {
			dirs = append(dirs, string(bytes.TrimSpace(out)))
		}
	}
	globbed, _ := filepath.Glob(e.PostgresDirs)
	slices.Sort(globbed)
	slices.Reverse(globbed) // the newest version first
	for _, dir := range append(dirs, globbed...) {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("none in pg_config --bindir or %s", e.PostgresDirs)
}

func findRedis(e Env) (string, error) { return e.lookRequired("redis-server") }

func findExampleTools(e Env) (string, error) {
	for _, tool := range []string{"curl", "jq"} {
		if _, err := e.lookRequired(tool); err != nil {
			return "", fmt.Errorf("%s %w", tool, err)
		}
	}
	return e.look("curl"), nil
}

// lookRequired finds an executable on e.Path, or says it is not there.
func (e Env) lookRequired(name string) (string, error) {
	if p := e.look(name); p != "" {
		return p, nil
	}
	return "", errors.New("not on PATH")
}

// look finds an executable on e.Path, or returns "".
func (e Env) look(name string) string {
	for _, dir := range filepath.SplitList(e.Path) {
		if p := filepath.Join(dir, name); dir != "" && isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
