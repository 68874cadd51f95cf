package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// binaryRun is one real fedsender process whose stderr the test reads.
type binaryRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{} // closed when the process has exited
}

// startBinary runs the fedsender binary with args, in an environment of
// the test's own without its FEDSENDER_* variables, plus env. The process
// is killed when the test ends; its stderr is logged if the test failed.
func startBinary(t *testing.T, env []string, args ...string) *binaryRun {
	t.Helper()
	r := &binaryRun{t: t, cmd: exec.Command(binary(t), args...), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FEDSENDER_") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
		if t.Failed() {
			t.Logf("stderr of fedsender %s (pid %d):\n%s", strings.Join(args, " "), r.cmd.Process.Pid, r.stderr.String())
		}
	})
	return r
}

func (r *binaryRun) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the process to exit by itself and returns its exit code.
func (r *binaryRun) waitExit(within time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		r.t.Fatalf("fedsender (pid %d) still running after %v", r.cmd.Process.Pid, within)
		return 0
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (r *binaryRun) stop() {
	r.t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.waitExit(60 * time.Second); code != 0 {
		r.t.Fatalf("fedsender exited with %d after SIGTERM", code)
	}
}

func (r *binaryRun) kill9() {
	r.t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		r.t.Fatal(err)
	}
	<-r.done
}

// waitReady polls the admin listener's /readyz until it answers 200, and
// fails the test if the process exits first.
func (r *binaryRun) waitReady(adminAddr string, within time.Duration) {
	r.t.Helper()
	eventually(r.t, within, func() bool {
		if r.exited() {
			r.t.Fatalf("fedsender exited with %d before serving /readyz:\n%s", r.cmd.ProcessState.ExitCode(), r.stderr.String())
		}
		return readyz(adminAddr) == http.StatusOK
	}, "fedsender's /readyz on %s never answered 200", adminAddr)
}

// readyz is the status of GET /readyz on addr, 0 when nothing answers.
func readyz(addr string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// writeRunConfig writes a configuration for a real `fedsender run` that
// logs JSON, with the admin API on adminAddr and further YAML in extra.
func writeRunConfig(t *testing.T, dataDir, adminAddr, extra string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "fedsender.yaml")
	body := fmt.Sprintf(`server_name: %s
data_dir: %s
log: {format: json}
admin: {listen: %q, token: t}
metrics: {listen: ""}
queue: {partitions: 4}
%s`, origin, dataDir, adminAddr, extra)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

func localAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// TestSecondInstanceOnTheSameDataDirRefused: two fedsenders with embedded
// NATS on different ports and one data_dir would each accept PDUs into one
// store and lose one's on restart. The second refuses to start, naming the
// directory and the process holding it; kill -9 of the holder frees it.
func TestSecondInstanceOnTheSameDataDirRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	adminA, adminB := localAddr(t), localAddr(t)
	confA := writeRunConfig(t, dataDir, adminA, fmt.Sprintf("nats: {listen: %q}\n", localAddr(t)))
	natsB := localAddr(t)
	confB := writeRunConfig(t, dataDir, adminB, fmt.Sprintf("nats: {listen: %q}\n", natsB))

	a := startBinary(t, nil, "run", "--config", confA)
	a.waitReady(adminA, 60*time.Second)

	b := startBinary(t, nil, "run", "--config", confB)
	eventually(t, 60*time.Second, func() bool {
		if readyz(adminB) == http.StatusOK {
			t.Fatalf("a second fedsender on data_dir %s started and serves /readyz while pid %d uses it", dataDir, a.cmd.Process.Pid)
		}
		return b.exited()
	}, "the second fedsender on data_dir %s neither exited nor served", dataDir)
	if code := b.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("the refused fedsender exited with 0")
	}
	host, _ := os.Hostname()
	msg := b.stderr.String()
	for _, want := range []string{"data_dir", dataDir, fmt.Sprintf("pid %d", a.cmd.Process.Pid), host} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal does not name %q:\n%s", want, msg)
		}
	}
	if c, err := net.Dial("tcp", natsB); err == nil {
		c.Close()
		t.Errorf("the refused fedsender's NATS port %s accepts connections", natsB)
	}

	a.kill9()
	c := startBinary(t, nil, "run", "--config", confB)
	c.waitReady(adminB, 60*time.Second)
	c.stop()
}

// TestBusyEmbeddedNATSPortFailsAtOnce: nats.listen on a port another
// process holds stops fedsender promptly, naming the address and the bind
// error.
func TestBusyEmbeddedNATSPortFailsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	conf := writeRunConfig(t, filepath.Join(t.TempDir(), "data"), localAddr(t), fmt.Sprintf("nats: {listen: %q}\n", addr))
	binary(t) // built before the clock starts
	started := time.Now()
	r := startBinary(t, nil, "run", "--config", conf)
	code := r.waitExit(60 * time.Second)
	took := time.Since(started)
	if code == 0 {
		t.Errorf("fedsender exited with 0 on a busy nats.listen port")
	}
	if took > 15*time.Second {
		t.Errorf("fedsender took %v to give up on a busy port, want a prompt failure", took.Round(time.Second))
	}
	msg := r.stderr.String()
	for _, want := range []string{"nats.listen", addr, "address already in use"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not name %q:\n%s", want, msg)
		}
	}
}

// runNATS runs a NATS server with JetStream for a fedsender process to
// use as nats.url; opts may add users.
func runNATS(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir = "127.0.0.1", -1, true, t.TempDir()
	opts.NoSigs = true
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready after 10s")
	}
	return ns
}
