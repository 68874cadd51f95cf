// Package docs_test runs the shell examples of fedsender's README.md and
// docs/*.md (OPERATIONS.md has most) exactly as written, the way an operator
// following them on one machine would.
//
// How it runs them:
//
//   - Every fenced block in the language sh, bash or shell is an example. The
//     documents are read in order (README.md, then docs/*.md by name) and
//     every example runs in that order in one environment, so a document may
//     rely on what an earlier example started (OPERATIONS.md uses the
//     fedsender the README's quick start runs). An example is run by
//     `bash -e -o pipefail -c` with its text unchanged: each line must
//     succeed, not only the last. An HTML comment before the block says more
//     (see parseExamples): `<!-- example: not run: REASON -->` for what one
//     machine cannot run (a Kubernetes cluster, the test suite itself), which
//     the test lists in its log; `background; ready: TEXT` for a server;
//     `shows: TEXT` and `exit: N` for what the example must print and end
//     with. A new block without an annotation is run, and must exit 0.
//   - The working directory is a copy of the module (everything but .git,
//     data/, bin/ and a built ./fedsender), so the dev configuration's ./data
//     and the receiver's files land there; `go run ./cmd/...` and
//     `go tool task ...` work there as in a checkout. The copy is removed when
//     the test ends. Its path is the same on every run of one checkout
//     (fedsender-docs-<hash of the checkout's path> in the temporary
//     directory), because the go command's build cache keys each package of
//     the module by its directory: a new path would compile fedsender again
//     on every run.
//   - GOBIN is an empty directory at the head of PATH, so that the README's
//     `go install` of `fedsender` and `nats` (the NATS CLI) puts them on the
//     PATH of the examples after it, as an operator's GOPATH/bin would be;
//     then comes the directory of the `go` that runs the test. HOME is empty
//     (no NATS CLI context of the developer applies), and FEDSENDER_*, NATS_*
//     and GOFLAGS variables are removed.
//   - The examples use the development configuration's fixed ports (NATS
//     4222, admin API 8008, receiver 8448, metrics 9464): the test first
//     checks that every 127.0.0.1 port the documents name is free, and fails
//     naming a busy one.
//
// Background examples are stopped (SIGTERM to their process group, SIGKILL
// after 30 s) when the test ends.
package docs_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedsender/fedsender/test/prereq"
)

// documents are the Markdown files whose examples run, in this order:
// README.md, then every docs/*.md by name.
func documents(t *testing.T, root string) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, d := range slices.Sorted(slices.Values(docs)) {
		out = append(out, filepath.Join("docs", filepath.Base(d)))
	}
	return out
}

const (
	// exampleTimeout bounds one example; `go run` and `go install` may
	// compile first, on a loaded machine.
	exampleTimeout = 10 * time.Minute
	// readyTimeout bounds a background example's start, compiling included.
	readyTimeout = 5 * time.Minute
	// showsTimeout bounds the wait for a background example's shows.
	showsTimeout = 30 * time.Second
)

func TestDocumentExamples(t *testing.T) {
	root := moduleRoot(t)
	var all []example
	for _, doc := range documents(t, root) {
		text, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		exs, err := parseExamples(doc, text)
		if err != nil {
			t.Fatalf("the examples of %s are not well annotated:\n%v", doc, err)
		}
		all = append(all, exs...)
	}
	prereq.Require(t, prereq.Examples)
	for _, cmd := range []string{"bash", "grep", "seq"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("the documents' examples need %s: apt-get install -y %s", cmd, debianPackage(cmd))
		}
	}
	ports := requireFreePorts(t, root, all)
	// Registered first, so run last: after every background example stopped.
	t.Cleanup(func() { waitPortsFree(t, ports) })

	env := newEnvironment(t, root)
	var notRun []string
	for _, ex := range all {
		if ex.notRun != "" {
			notRun = append(notRun, fmt.Sprintf("%s (not run: %s)", ex, ex.notRun))
			continue
		}
		t.Run(ex.String(), func(t *testing.T) {
			if ex.background {
				env.startBackground(t, ex)
				return
			}
			env.run(t, ex)
		})
	}
	t.Logf("%d examples, %d not run:\n  %s", len(all), len(notRun), strings.Join(notRun, "\n  "))
	for _, bg := range env.background {
		bg.checkShows(t)
		select {
		case <-bg.done:
			t.Errorf("%s (background) ended with status %d before the examples were done; its output:\n%s", bg.ex, bg.exitCode(), bg.output())
		default:
		}
	}
}

// debianPackage names the package that provides a command the examples use
// besides curl (a prerequisite of the test set-up).
func debianPackage(cmd string) string {
	if cmd == "seq" {
		return "coreutils"
	}
	return cmd
}

// environment is the directory, variables and programs the examples run
// with.
type environment struct {
	dir        string
	logs       string // the examples' output files
	env        []string
	background []*process
}

func newEnvironment(t *testing.T, root string) *environment {
	t.Helper()
	tmp := t.TempDir()
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("fedsender-docs-%x", sum[:6]))
	removeAll := func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the copy of the module: %v", err)
		}
	}
	removeAll() // left by a run that was killed
	t.Cleanup(removeAll)
	copyModule(t, root, dir)
	bin := filepath.Join(tmp, "bin")
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the examples need the go command: %v", err)
	}
	e := &environment{dir: dir, logs: tmp}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "FEDSENDER_") || strings.HasPrefix(name, "NATS_") || strings.HasPrefix(name, "XDG_") ||
			name == "HOME" || name == "PATH" || name == "GOFLAGS" || name == "GOBIN" {
			continue
		}
		e.env = append(e.env, kv)
	}
	// The go command's directories were found under the real HOME: keep them.
	for _, name := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GONOSUMDB", "GOTOOLCHAIN"} {
		out, err := exec.Command(goBin, "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		e.env = append(e.env, name+"="+strings.TrimSpace(string(out)))
	}
	e.env = append(e.env, "HOME="+home, "GOBIN="+bin,
		"PATH="+bin+string(os.PathListSeparator)+filepath.Dir(goBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	if err := os.Mkdir(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range slices.Backward(e.background) {
			p.stop(t)
		}
	})
	return e
}

// run runs a foreground example and checks its exit status and output.
func (e *environment) run(t *testing.T, ex example) {
	p := e.start(t, ex)
	select {
	case <-p.done:
	case <-time.After(exampleTimeout):
		p.stop(t)
		t.Fatalf("%s did not end within %v; its output:\n%s", ex, exampleTimeout, p.output())
	}
	if code := p.exitCode(); code != ex.exit {
		t.Fatalf("%s exited with status %d, want %d; its output:\n%s", ex, code, ex.exit, p.output())
	}
	out := p.output()
	for _, want := range ex.shows {
		if !strings.Contains(out, want) {
			t.Errorf("%s: the output does not show %q; it is:\n%s", ex, want, out)
		}
	}
	t.Logf("%s:\n%s", ex, out)
}

// startBackground starts a background example and waits until it is ready.
func (e *environment) startBackground(t *testing.T, ex example) {
	p := e.start(t, ex)
	e.background = append(e.background, p)
	if ex.ready == "" {
		return
	}
	deadline := time.After(readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.output(), ex.ready) {
		select {
		case <-p.done:
			t.Fatalf("%s exited with status %d before it showed %q; its output:\n%s", ex, p.exitCode(), ex.ready, p.output())
		case <-deadline:
			t.Fatalf("%s did not show %q within %v; its output:\n%s", ex, ex.ready, readyTimeout, p.output())
		case <-tick.C:
		}
	}
}

func (e *environment) start(t *testing.T, ex example) *process {
	t.Helper()
	// The output goes to a file, which the test reads while the example
	// writes it.
	out, err := os.CreateTemp(e.logs, "example-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	p := &process{ex: ex, outPath: out.Name(), done: make(chan struct{})}
	p.cmd = exec.Command("bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", ex.script)
	p.cmd.Dir, p.cmd.Env = e.dir, e.env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stop reaches what it started
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", ex, err)
	}
	go func() {
		_ = p.cmd.Wait() // the status is read from ProcessState
		close(p.done)
	}()
	return p
}

// process is a running example.
type process struct {
	ex      example
	cmd     *exec.Cmd
	outPath string // stdout and stderr
	done    chan struct{}
}

func (p *process) output() string {
	out, err := os.ReadFile(p.outPath)
	if err != nil {
		return fmt.Sprintf("(reading its output: %v)", err)
	}
	return string(out)
}

func (p *process) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// checkShows waits for a background example's shows.
func (p *process) checkShows(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(showsTimeout)
	for _, want := range p.ex.shows {
		for !strings.Contains(p.output(), want) {
			if time.Now().After(deadline) {
				t.Errorf("%s: the output does not show %q; it is:\n%s", p.ex, want, p.output())
				break
			}
			time.Sleep(50 * time.Millisecond) // polling an output buffer that has no signal
		}
	}
}

// stop ends the example's process group: SIGTERM, then SIGKILL after 30 s.
func (p *process) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30 s of SIGTERM; killing it", p.ex)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	t.Logf("%s (background, stopped):\n%s", p.ex, p.output())
}

// moduleRoot is the checkout the test runs in: go test runs it in test/docs.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// skippedTopLevel are what a checkout may hold that is not the module:
// fedsender's data, build outputs and the repository.
var skippedTopLevel = []string{".git", "data", "bin", "fedsender"}

func copyModule(t *testing.T, root, dst string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if filepath.Dir(rel) == "." && slices.Contains(skippedTopLevel, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		default:
			return nil // sockets, symlinks: nothing the examples use
		}
	})
	if err != nil {
		t.Fatalf("copy the module to %s: %v", dst, err)
	}
}

// loopbackPort matches the fixed ports the examples, the development
// configuration and the Taskfile name.
var loopbackPort = regexp.MustCompile(`127\.0\.0\.1:(\d{2,5})\b`)

// requireFreePorts fails the test when one of those ports is taken: the
// examples would talk to, or fail to start beside, another program. It
// returns them.
func requireFreePorts(t *testing.T, root string, examples []example) []string {
	t.Helper()
	ports := map[string]bool{"9464": true} // metrics.listen's default, not written in the dev configuration
	var texts []string
	for _, f := range []string{"deploy/fedsender.dev.yaml", "Taskfile.yml"} {
		text, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(text))
	}
	for _, ex := range examples {
		if ex.notRun == "" {
			texts = append(texts, ex.script)
		}
	}
	for _, text := range texts {
		for _, m := range loopbackPort.FindAllStringSubmatch(text, -1) {
			ports[m[1]] = true
		}
	}
	list := slices.Sorted(maps.Keys(ports))
	for _, port := range list {
		if err := portFree(port); err != nil {
			t.Fatalf("the documents' examples need 127.0.0.1:%s, which is busy (a `go tool task run` or receiver still running?): %v", port, err)
		}
	}
	return list
}

func portFree(port string) error {
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	return l.Close()
}

// waitPortsFree checks that nothing the examples started still listens:
// stopping a `go run` does not wait for the program it runs.
func waitPortsFree(t *testing.T, ports []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range ports {
		for err := portFree(port); err != nil; err = portFree(port) {
			if time.Now().After(deadline) {
				t.Errorf("127.0.0.1:%s is still in use 30 s after the examples stopped: %v", port, err)
				break
			}
			time.Sleep(100 * time.Millisecond) // polling a port: nothing to wait on
		}
	}
}
