//go:build interop

package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// fedsenderPartitions is how many partitions fedsender's destinations are
// spread over.
const fedsenderPartitions = 4

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
queue: {partitions: %d, checkpoint_interval: 100ms}
`, o.name, o.keyPath, filepath.Join(dir, "data"), natsPort, caPath, fedsenderPartitions))
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

// publishEDU publishes one EDU envelope, waits for the stream to
// acknowledge it and returns its sequence in the EDU stream; msgID, when
// set, is its Nats-Msg-Id (a to-device message's message_id), so a
// publisher's retry is not sent twice.
func (f *fedsender) publishEDU(e edu, msgID string) uint64 {
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
	ack, err := f.js.Publish(ctx, eduSubject, data, opts...)
	if err != nil {
		f.t.Fatalf("publish %s EDU: %v", e.Type, err)
	}
	return ack.Sequence
}

// waitEDUOffset waits until fedsender has stored dest's EDU offset at seq
// or beyond: what it reads again after a restart, so that the must-deliver
// EDUs up to seq are not sent again.
func (f *fedsender) waitEDUOffset(dest string, seq uint64, within time.Duration) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var stored uint64
	for {
		stored = f.eduOffset(ctx, dest)
		if stored >= seq {
			return
		}
		select {
		case <-ctx.Done():
			f.t.Fatalf("fedsender did not store %s's EDU offset at %d within %v (stored: %d)", dest, seq, within, stored)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// eduOffset reads dest's EDU offset from the bucket fedsender keeps it in
// (0: none stored yet).
func (f *fedsender) eduOffset(ctx context.Context, dest string) uint64 {
	f.t.Helper()
	kv, err := f.js.KeyValue(ctx, streams.EDUOffsetBucket)
	if err != nil {
		f.t.Fatalf("open %s: %v", streams.EDUOffsetBucket, err)
	}
	for p := range fedsenderPartitions {
		entry, err := kv.Get(ctx, streams.OffsetKey(p, dest))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			f.t.Fatalf("read %s's EDU offset: %v", dest, err)
		}
		off, err := strconv.ParseUint(string(entry.Value()), 10, 64)
		if err != nil {
			f.t.Fatalf("%s's EDU offset %q: %v", dest, entry.Value(), err)
		}
		return off
	}
	return 0
}
