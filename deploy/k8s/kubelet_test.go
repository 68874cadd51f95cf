package k8s_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fedsender/fedsender/test/fedsenderproc"
)

// podName is the pod's name, and so its host name and fedsender's default
// instance_name.
const podName = "fedsender-5d8f7c9b4-x2k7q"

// TestKubeletRunsTheDeployment starts fedsender exactly as each rendered
// Deployment says: the container's args, its environment as the kubelet
// resolves it plus the service-link variables Kubernetes would inject for
// the rendering's Services, its ports (in a network namespace of its own,
// as a pod has), the pod's host name, user and group, and its volumes laid
// out with their files' modes. It then probes it as the kubelet does (the
// startup probe, then readiness and liveness, by the probes' own paths,
// ports, periods and thresholds), and stops it with SIGTERM, which must end
// it cleanly within terminationGracePeriodSeconds.
//
// What a cluster would provide otherwise is local: the production overlay's
// NATS cluster is an in-process server behind a forwarder on the pod's
// 127.0.0.1:4222 (the variables FEDSENDER_NATS_URL and
// FEDSENDER_NATS_REPLICAS=1 stand in for the cluster's DNS and its three
// servers); the dev overlay runs its own embedded server, as on a cluster.
func TestKubeletRunsTheDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the pod gets network and UTS namespaces of its own and runs as the pod's user (CI runs as root)")
	}
	rendered := render(t)
	for _, name := range []string{"dev", "prod"} {
		t.Run(name, func(t *testing.T) {
			m := rendered[name]
			p := makePod(t, m, secretData(t))
			ns := newPodNetwork(t)
			env := append(clusterEnv(m), p.env...)
			if name == "prod" {
				nats := runNATS(t, "fedsender", secretData(t)["fedsender-nats"]["password"])
				ns.forward(t, "127.0.0.1:4222", nats.Addr().String())
				env = append(env, "FEDSENDER_NATS_URL=nats://127.0.0.1:4222", "FEDSENDER_NATS_REPLICAS=1")
			}
			proc := ns.start(t, p, env)
			kubelet{t: t, ns: ns, proc: proc, c: p.c}.run()

			grace := time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
			proc.stop(t, grace)
		})
	}
}

// runNATS starts an in-process NATS server with JetStream on a real port
// that accepts the one user.
func runNATS(t *testing.T, user, password string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		Username: user, Password: password, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return s
}

// podNetwork is a network and UTS namespace of the pod's, held open by a
// file descriptor: sockets made in it see only its loopback interface,
// and the process started in it has the pod's host name.
type podNetwork struct {
	netns *os.File
}

// inPod runs f on an OS thread that has entered the pod's network
// namespace; the thread is discarded afterwards.
func (n podNetwork) inPod(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(int(n.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func newPodNetwork(t *testing.T) podNetwork {
	t.Helper()
	var n podNetwork
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET | unix.CLONE_NEWUTS); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Sethostname([]byte(podName)); err != nil {
				return fmt.Errorf("sethostname: %w", err)
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			f, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
			n.netns = f
			return err
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("a network namespace for the pod: %v", err)
	}
	t.Cleanup(func() { n.netns.Close() })
	return n
}

// loopbackUp brings up lo in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, req); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	req.SetUint16(req.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, req); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// forward listens on addr in the pod and passes each connection to target
// outside it, as a Service routes to a server elsewhere in the cluster.
func (n podNetwork) forward(t *testing.T, addr, target string) {
	t.Helper()
	var l net.Listener
	if err := n.inPod(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			wg.Go(func() { io.Copy(out, in); out.Close() })
			wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
}

// process is fedsender running in the pod.
type process struct {
	cmd    *exec.Cmd
	output *bytes.Buffer // read only once done is closed: Wait has copied everything
	done   chan struct{}
}

// start runs the fedsender binary in the pod's namespaces, as the pod's
// user, with the container's args and only the environment env.
func (n podNetwork) start(t *testing.T, p pod, env []string) *process {
	t.Helper()
	// The image's binary, where the pod's user may run it.
	bin := filepath.Join(p.root, "fedsender")
	data, err := os.ReadFile(fedsenderproc.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	proc := &process{cmd: exec.Command(bin, p.args...), output: &bytes.Buffer{}, done: make(chan struct{})}
	proc.cmd.Env = env
	proc.cmd.Dir = "/"
	proc.cmd.Stdout, proc.cmd.Stderr = proc.output, proc.output
	proc.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(p.uid()), Gid: uint32(p.gid())},
		Setpgid:    true,
	}
	// A process forked from a thread in the pod's namespaces is in them.
	if err := n.inPod(proc.cmd.Start); err != nil {
		t.Fatal(err)
	}
	go func() { proc.cmd.Wait(); close(proc.done) }()
	t.Cleanup(func() {
		proc.cmd.Process.Kill()
		<-proc.done
		if t.Failed() {
			t.Logf("output of fedsender %s:\n%s", strings.Join(p.args, " "), proc.output.String())
		}
	})
	return proc
}

// stop sends SIGTERM, as the kubelet does, and wants a clean exit within the
// grace period.
func (p *process) stop(t *testing.T, grace time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("fedsender exited with %d after SIGTERM", code)
		}
		t.Logf("SIGTERM to exit: %v (terminationGracePeriodSeconds: %v)", time.Since(start).Round(time.Millisecond), grace)
	case <-time.After(grace):
		t.Fatalf("fedsender still running %v after SIGTERM: the kubelet would kill it", grace)
	}
}

// kubelet probes a container the way the kubelet does: an HTTP GET to the
// pod's address and the probe's port (by name or number) and path, within
// timeoutSeconds, every periodSeconds; a status from 200 to 399 succeeds.
// The startup probe runs first and must succeed within failureThreshold
// periods; then readiness must succeed (within this test's deadline) and
// liveness must not fail failureThreshold times in a row meanwhile.
type kubelet struct {
	t    *testing.T
	ns   podNetwork
	proc *process
	c    corev1.Container
}

func (k kubelet) run() {
	t := k.t
	t.Helper()
	for _, probe := range []*corev1.Probe{k.c.StartupProbe, k.c.ReadinessProbe, k.c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Fatalf("the container lacks a startup, readiness or liveness probe with httpGet")
		}
	}
	if !k.until(k.c.StartupProbe, int(k.c.StartupProbe.FailureThreshold)) {
		t.Fatalf("the startup probe failed %d times in a row: the kubelet would restart the container", k.c.StartupProbe.FailureThreshold)
	}
	// Readiness: the test's own bound (NATS is local), polled at the
	// probe's period; liveness must hold meanwhile.
	deadline := time.Now().Add(2 * time.Minute)
	livenessFailures := 0
	for {
		if k.probe(k.c.ReadinessProbe) == nil {
			break
		}
		if err := k.probe(k.c.LivenessProbe); err != nil {
			livenessFailures++
			if livenessFailures >= int(k.c.LivenessProbe.FailureThreshold) {
				t.Fatalf("liveness failed %d times in a row before the pod was ready: %v", livenessFailures, err)
			}
		} else {
			livenessFailures = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready within 2 minutes; last readiness answer: %v", k.probe(k.c.ReadinessProbe))
		}
		k.sleep(k.c.ReadinessProbe)
	}
	if err := k.probe(k.c.LivenessProbe); err != nil {
		t.Fatalf("ready but not live: %v", err)
	}
}

// until runs probe until it succeeds, at most n times; it fails the test
// if the process exits.
func (k kubelet) until(probe *corev1.Probe, n int) bool {
	for range n {
		if k.probe(probe) == nil {
			return true
		}
		k.sleep(probe)
	}
	return false
}

func (k kubelet) sleep(probe *corev1.Probe) {
	select {
	case <-k.proc.done:
		k.t.Fatalf("fedsender exited with %d", k.proc.cmd.ProcessState.ExitCode())
	case <-time.After(time.Duration(probe.PeriodSeconds) * time.Second):
	}
}

// probe is one HTTP probe from the kubelet; nil is success.
func (k kubelet) probe(probe *corev1.Probe) error {
	get := probe.HTTPGet
	port := k.port(get.Port)
	timeout := time.Duration(probe.TimeoutSeconds) * time.Second
	client := http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = k.ns.inPod(func() error { conn, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
			return conn, err
		}},
		// The kubelet follows redirects to the same host only; fedsender's
		// probes never redirect.
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("redirected") },
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(port))+get.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	req.Header.Set("Accept", "*/*")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %d %s", get.Path, resp.StatusCode, body)
	}
	return nil
}

// port resolves a probe's port: a number, or the name of a container port.
func (k kubelet) port(p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range k.c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	k.t.Fatalf("probe port %q: the container has no port of that name", p.StrVal)
	return 0
}
