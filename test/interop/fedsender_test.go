//go:build interop

package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/fedsenderproc"
	"github.com/fedsender/fedsender/test/pki"
)

// fedsender is a real `fedsender run` process sending as the origin, with
// its embedded NATS on a fixed port so it can be killed and started again
// on the same data.
type fedsender struct {
	t       *testing.T
	conf    string
	natsURL string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}

	nc  *nats.Conn
	js  jetstream.JetStream
	pub *streams.Publisher
}

// startFedsender configures fedsender as o, trusting ca for the
// destinations' certificates and letting it reach 127.0.0.1, and starts it.
func startFedsender(t *testing.T, o *origin, ca *pki.CA) *fedsender {
	t.Helper()
	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	writeFile(t, caPath, ca.PEM())
	natsPort := fedsenderproc.FreePort(t)
	f := &fedsender{
		t:       t,
		conf:    filepath.Join(dir, "fedsender.yaml"),
		natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		logPath: filepath.Join(dir, "fedsender.log"),
	}
	writeFile(t, f.conf, fmt.Sprintf(`server_name: %q
signing_key_path: %s
data_dir: %s
log: {level: warn}
nats: {listen: "127.0.0.1:%d", max_store: 1GiB, max_memory: 64MiB}
admin: {listen: "127.0.0.1:0", token: interop}
metrics: {listen: "127.0.0.1:0"}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 60s
queue: {partitions: 4, checkpoint_interval: 100ms}
`, o.name, o.keyPath, filepath.Join(dir, "data"), natsPort, caPath))
	f.start()
	t.Cleanup(func() {
		f.kill9()
		if t.Failed() {
			data, _ := os.ReadFile(f.logPath)
			t.Logf("fedsender log:\n%s", data)
		}
	})
	return f
}

// start runs fedsender and connects a publisher to its NATS.
func (f *fedsender) start() {
	f.t.Helper()
	logf, err := os.OpenFile(f.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	f.cmd = exec.Command(fedsenderproc.Binary(f.t), "run", "--config", f.conf)
	f.cmd.Stdout, f.cmd.Stderr = logf, logf
	if err := f.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(exited)
	}(f.cmd, f.exited)

	deadline := time.Now().Add(time.Minute)
	for {
		f.nc, err = nats.Connect(f.natsURL, nats.MaxReconnects(0))
		if err == nil {
			break
		}
		select {
		case <-f.exited:
			data, _ := os.ReadFile(f.logPath)
			f.t.Fatalf("fedsender exited at start:\n%s", data)
		default:
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fedsender's NATS did not answer within 1m: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f.js, err = jetstream.New(f.nc); err != nil {
		f.t.Fatal(err)
	}
	f.pub = streams.NewPublisher(f.js)
}

// kill9 kills fedsender with SIGKILL, as a crash would, and waits for it.
func (f *fedsender) kill9() {
	if f.cmd == nil {
		return
	}
	f.nc.Close()
	f.cmd.Process.Kill()
	<-f.exited
	f.cmd = nil
}

// publishPDUs publishes events for dest, in order, and waits for the
// stream to acknowledge them all.
func (f *fedsender) publishPDUs(dest string, events ...gomatrixserverlib.PDU) {
	f.t.Helper()
	for _, ev := range events {
		env, err := json.Marshal(streams.Envelope{RoomID: ev.RoomID().String(), EventID: ev.EventID(),
			PDU: ev.JSON(), Destinations: []string{dest}})
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.pub.PublishAsync(env); err != nil {
			f.t.Fatalf("publish %s: %v", ev.EventID(), err)
		}
	}
	select {
	case <-f.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		f.t.Fatal("publishing did not complete within 1m")
	}
}

// edu is the envelope a homeserver publishes on fedsender.edu for one EDU.
type edu struct {
	Type         string   `json:"edu_type"`
	Content      any      `json:"content"`
	Destinations []string `json:"destinations"`
	Key          string   `json:"key,omitempty"`
}

// eduSubject is the subject homeservers publish EDU envelopes on.
const eduSubject = "fedsender.edu"

// publishEDU publishes one EDU envelope and waits for the stream to
// acknowledge it; msgID, when set, is its Nats-Msg-Id (a to-device
// message's message_id), so a publisher's retry is not sent twice.
func (f *fedsender) publishEDU(e edu, msgID string) {
	f.t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		f.t.Fatal(err)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.js.Publish(ctx, eduSubject, data, opts...); err != nil {
		f.t.Fatalf("publish %s EDU: %v", e.Type, err)
	}
}
