package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// jsonLines checks that every line of stderr is one JSON object with a
// level and a message, and returns them.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var records []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("stderr line %d is not a JSON log record: %s", n, sc.Text())
			continue
		}
		records = append(records, rec)
	}
	return records
}

// findRecord returns the first record whose message or error contains
// text and whose other fields have the values in want.
func findRecord(records []map[string]any, text string, want map[string]string) map[string]any {
next:
	for _, rec := range records {
		m, _ := rec["msg"].(string)
		e, _ := rec["error"].(string)
		if !strings.Contains(m, text) && !strings.Contains(e, text) {
			continue
		}
		for k, v := range want {
			if fmt.Sprint(rec[k]) != v {
				continue next
			}
		}
		return rec
	}
	return nil
}

// TestLibraryLogLinesAreJSON: with log.format json every line fedsender
// writes is a JSON record, also what the NATS client, the embedded NATS
// server and the actor engine report: a subscription NATS refuses, a lost
// connection, the server's start, actors starting (at debug level).
func TestLibraryLogLinesAreJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	t.Run("NATS client and actor engine", func(t *testing.T) {
		// An account that may not receive reset commands: NATS refuses the
		// subscription asynchronously, which the client reports.
		ns := runNATS(t, server.Options{Users: []*server.User{{Username: "fedsender", Password: "pw",
			Permissions: &server.Permissions{Subscribe: &server.SubjectPermission{
				Allow: []string{">"}, Deny: []string{"fedsender.control.>"}}}}}})
		adminAddr := localAddr(t)
		conf := writeRunConfig(t, filepath.Join(t.TempDir(), "data"), adminAddr,
			fmt.Sprintf("nats: {url: \"nats://fedsender:pw@127.0.0.1:%d\"}\n", ns.Addr().(*net.TCPAddr).Port))
		r := startBinary(t, []string{"FEDSENDER_LOG_LEVEL=debug"}, "run", "--config", conf)
		r.waitReady(adminAddr, 60*time.Second)
		eventually(t, 30*time.Second, func() bool { return strings.Contains(r.stderr.String(), "fedsender.control.") },
			"NATS's refusal of the reset subscription was never reported")
		ns.Shutdown()
		eventually(t, 30*time.Second, func() bool { return strings.Contains(r.stderr.String(), "disconnected") },
			"the lost NATS connection was never reported")
		r.kill9()
		records := jsonLines(t, r.stderr.String())
		for _, c := range []struct {
			msg  string
			want map[string]string
		}{
			{"ermissions violation", map[string]string{"level": "ERROR"}},
			{"disconnected", map[string]string{"level": "WARN"}},
			{"Actor started", map[string]string{"level": "DEBUG"}},
		} {
			if findRecord(records, c.msg, c.want) == nil {
				t.Errorf("no JSON record %q with %v", c.msg, c.want)
			}
		}
	})
	t.Run("embedded NATS server", func(t *testing.T) {
		adminAddr := localAddr(t)
		conf := writeRunConfig(t, filepath.Join(t.TempDir(), "data"), adminAddr,
			fmt.Sprintf("nats: {listen: %q}\n", localAddr(t)))
		r := startBinary(t, []string{"FEDSENDER_LOG_LEVEL=debug"}, "run", "--config", conf)
		r.waitReady(adminAddr, 60*time.Second)
		r.stop()
		records := jsonLines(t, r.stderr.String())
		if findRecord(records, "Starting nats-server", map[string]string{"component": "nats-server"}) == nil {
			t.Errorf("no JSON record of the embedded NATS server's start")
		}
	})
}
