package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

var (
	natsCLIOnce sync.Once
	natsCLIPath string
	natsCLIErr  error
)

// natsCLI returns the official NATS CLI (github.com/nats-io/natscli, the
// module's go tool), built once.
func natsCLI(t *testing.T) string {
	t.Helper()
	natsCLIOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		var out []byte
		out, natsCLIErr = exec.CommandContext(ctx, "go", "tool", "-n", "nats").Output()
		natsCLIPath = strings.TrimSpace(string(out))
	})
	if natsCLIErr != nil {
		t.Fatalf("building the NATS CLI (go tool -n nats): %v", natsCLIErr)
	}
	return natsCLIPath
}

// nats runs the NATS CLI against the harness's NATS server, with a home of
// its own so that no saved context applies.
func (h *harness) nats(args ...string) (stdout, stderr string, err error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, natsCLI(h.t), append([]string{"--server", h.svc.NATSURL}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+h.t.TempDir(), "XDG_CONFIG_HOME="+h.t.TempDir(), "NATS_CONTEXT=", "NO_COLOR=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func (h *harness) mustNATS(args ...string) string {
	h.t.Helper()
	out, errs, err := h.nats(args...)
	if err != nil {
		h.t.Fatalf("nats %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

// adminRaw calls the admin API and returns the status and the body as sent.
func (h *harness) adminRaw(method, path string) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://"+h.svc.AdminAddr+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestOperatorSurfaces drives a running fedsender with the official NATS
// CLI (micro ls/info/stats, req show and reset, kv get) and the HTTP API's
// /rooms, and checks that they agree.
func TestOperatorSurfaces(t *testing.T) {
	h := newHarness(t, nil)
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusInternalServerError})
	h.publish("!a:origin.test", 1, d)
	h.publish("!b:origin.test", 2, d)
	h.publish("!a:origin.test", 3, d)
	eventually(t, 10*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "admin API never showed %s failing", d)

	// /rooms: each room with its newest PDU's stream ordering.
	eventually(t, 5*time.Second, func() bool {
		_, body := h.adminRaw("GET", "/_synapse/admin/v1/federation/destinations/"+d+"/rooms")
		return body == `{"rooms":[{"room_id":"!a:origin.test","stream_ordering":3},{"room_id":"!b:origin.test","stream_ordering":2}],"total":2}`
	}, "rooms of %s", d)

	ls := h.mustNATS("micro", "ls")
	if !strings.Contains(ls, streams.AdminService) {
		t.Errorf("nats micro ls does not list %s:\n%s", streams.AdminService, ls)
	}
	info := h.mustNATS("micro", "info", streams.AdminService)
	for _, ep := range []string{"list", "show", "rooms", "reset"} {
		if !strings.Contains(info, streams.AdminSubject(ep)) {
			t.Errorf("nats micro info lacks %s:\n%s", streams.AdminSubject(ep), info)
		}
	}

	// show: the HTTP API's details answer, byte for byte.
	req, _ := json.Marshal(map[string]string{"destination": d})
	_, details := h.adminRaw("GET", "/_synapse/admin/v1/federation/destinations/"+d)
	if got := strings.TrimSpace(h.mustNATS("req", "--raw", streams.AdminSubject("show"), string(req))); got != details {
		t.Errorf("nats req show = %s\nHTTP details  = %s", got, details)
	}
	// kv get: the document, the same fields.
	var doc map[string]any
	raw := h.mustNATS("kv", "get", streams.DestinationBucket, streams.DestinationKey(d), "--raw")
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		t.Fatalf("nats kv get %s: %v in %q", streams.DestinationKey(d), err, raw)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(details), &shown); err != nil {
		t.Fatal(err)
	}
	for k, v := range shown {
		if doc[k] != v {
			t.Errorf("kv document %s = %v, details show %v", k, doc[k], v)
		}
	}
	// A malformed request is a micro error that says so.
	out, errs, _ := h.nats("req", streams.AdminSubject("show"), "not json")
	if all := out + errs; !strings.Contains(all, "400") || !strings.Contains(all, "Content not JSON") {
		t.Errorf("nats req show 'not json' printed:\n%s", all)
	}

	// reset through the micro service: the owner clears the timings and
	// wakes the destination, which then gets every PDU.
	r.SetFault(receiver.Fault{})
	if got := strings.TrimSpace(h.mustNATS("req", "--raw", streams.AdminSubject("reset"), string(req))); got != "{}" {
		t.Fatalf("nats req reset = %q, want {}", got)
	}
	eventually(t, 10*time.Second, func() bool { return r.PDUCount() >= 3 }, "after reset, %s got %d of 3 PDUs", d, r.PDUCount())
	eventually(t, 5*time.Second, func() bool {
		raw, _, err := h.nats("kv", "get", streams.DestinationBucket, streams.DestinationKey(d), "--raw")
		return err == nil && strings.Contains(raw, `"retry_last_ts":0`) && strings.Contains(raw, `"last_successful_stream_ordering":3`)
	}, "the kv document of %s does not show the recovery", d)
	// A second reset is not needed: Synapse's 400, on both surfaces.
	out, errs, _ = h.nats("req", streams.AdminSubject("reset"), string(req))
	if all := out + errs; !strings.Contains(all, "The retry timing does not need to be reset for this destination.") {
		t.Errorf("nats req reset of a healthy destination printed:\n%s", all)
	}
	stats := h.mustNATS("micro", "stats", streams.AdminService)
	if !strings.Contains(stats, "show") || !strings.Contains(stats, "reset") {
		t.Errorf("nats micro stats:\n%s", stats)
	}
}
