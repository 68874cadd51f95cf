package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fedsender/fedsender/test/fedsenderproc"
)

// natsCluster is three NATS servers with JetStream routed into one cluster.
type natsCluster struct {
	nodes []*natsServer
	// monitor is each node's monitoring address, for /healthz.
	monitor []string
}

// startNATSCluster starts three in-process NATS servers routed into one
// cluster.
func startNATSCluster(t *testing.T) *natsCluster { return newNATSCluster(t, false) }

// startNATSProcessCluster is startNATSCluster with each node a nats-server
// process (built from the version go.mod names), which kill9 can kill.
func startNATSProcessCluster(t *testing.T) *natsCluster { return newNATSCluster(t, true) }

func newNATSCluster(t *testing.T, processes bool) *natsCluster {
	t.Helper()
	const n = 3
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range ports {
		ports[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
	}
	c := &natsCluster{}
	for i := range n {
		mport := freePort(t)
		ns := newNATSServer(t, fmt.Sprintf("n%d", i+1), server.Options{
			HTTPHost: "127.0.0.1", HTTPPort: mport,
			Cluster: server.ClusterOpts{Name: "fedsender", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if processes {
			ns.bin = fedsenderproc.NATSServerBinary(t)
		}
		c.nodes = append(c.nodes, ns)
		c.monitor = append(c.monitor, fmt.Sprintf("http://127.0.0.1:%d", mport))
	}
	for _, ns := range c.nodes {
		ns.start()
	}
	for i := range c.nodes {
		c.waitHealthy(t, i)
	}
	return c
}

// url is the comma-separated list fedsender's nats.url takes.
func (c *natsCluster) url() string {
	var urls []string
	for _, ns := range c.nodes {
		urls = append(urls, ns.url)
	}
	return strings.Join(urls, ",")
}

// waitHealthy waits until node i's /healthz answers 200: JetStream is up
// and its streams and consumers are current, the check an operator's
// rolling restart waits for before taking the next node down.
func (c *natsCluster) waitHealthy(t *testing.T, i int) {
	t.Helper()
	eventually(t, 2*time.Minute, func() bool {
		resp, err := http.Get(c.monitor[i] + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "NATS node %s is not healthy", c.nodes[i].opts.ServerName)
}

// waitJetStream waits until the cluster can place a stream on three
// replicas, as fedsender's streams are.
func waitJetStream(t *testing.T, url string) {
	t.Helper()
	if err := fedsenderproc.WaitJetStream(url, 3, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// startProcess runs ns as a nats-server process with the same settings as
// in-process, its log in a file shown if the test fails.
func (ns *natsServer) startProcess() {
	t := ns.t
	t.Helper()
	o := ns.opts
	var routes []string
	for _, u := range o.Routes {
		routes = append(routes, strconv.Quote(u.String()))
	}
	conf := filepath.Join(o.StoreDir, "nats-server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
listen: "%s:%d"
http: "%s:%d"
jetstream { store_dir: %q }
cluster { name: %s, listen: "%s:%d", routes: [%s] }
`, o.ServerName, o.Host, o.Port, o.HTTPHost, o.HTTPPort, o.StoreDir, o.Cluster.Name, o.Cluster.Host, o.Cluster.Port, strings.Join(routes, ", "))), 0o600); err != nil {
		t.Fatal(err)
	}
	if ns.log == nil {
		ns.log = fedsenderproc.LogFile(t, filepath.Join(t.TempDir(), o.ServerName+".log"), "nats-server "+o.ServerName+"'s log (the last 4 KiB)", 4<<10)
	}
	cmd := exec.Command(ns.bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = ns.log, ns.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("nats-server %s: %v", o.ServerName, err)
	}
	ns.proc = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", o.Host, o.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s not listening on %s within 30s", o.ServerName, ns.url)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopProcess ends a nats-server process as an operator's restart does
// (SIGTERM, lame duck skipped), or at once with kill -9.
func (ns *natsServer) stopProcess(sig syscall.Signal) {
	if ns.proc == nil {
		return
	}
	ns.proc.Process.Signal(sig)
	done := make(chan struct{})
	go func() { ns.proc.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		ns.proc.Process.Kill()
		<-done
	}
	ns.proc = nil
}

// kill9 kills a nats-server process node: no shutdown, no flush.
func (ns *natsServer) kill9() {
	ns.t.Helper()
	if ns.bin == "" {
		ns.t.Fatal("kill9 needs a nats-server process (startNATSProcessCluster)")
	}
	ns.stopProcess(syscall.SIGKILL)
}
