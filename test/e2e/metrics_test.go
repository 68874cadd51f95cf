package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// TestRunServesPrometheusMetricsAndTracedJSONLogs runs the real binary with
// JSON logs and the console trace exporter, scrapes /metrics and parses it
// as Prometheus text, and finds the trace of a logged per-PDU error both in
// the log record and among the exported spans.
func TestRunServesPrometheusMetricsAndTracedJSONLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	dir := t.TempDir()
	key, ca, keyPath, caPath := keyAndCAFiles(t, dir, "metrics")
	natsPort, metricsPort := freePort(t), freePort(t)
	conf := filepath.Join(dir, "fedsender.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
signing_key_path: %s
data_dir: %s
log: {level: info, format: json}
nats: {listen: "127.0.0.1:%d", max_store: 1GiB, max_memory: 64MiB}
admin: {listen: "127.0.0.1:0", token: t}
metrics: {listen: "127.0.0.1:%d"}
federation:
  ca_file: %s
  ip_range_allowlist: [127.0.0.0/8]
  request_timeout: 5s
queue: {partitions: 8, checkpoint_interval: 100ms}
`, origin, keyPath, filepath.Join(dir, "data"), natsPort, metricsPort, caPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr lockedBuffer
	cmd := exec.Command(binary(t), "run", "--config", conf)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=console", "OTEL_SERVICE_NAME=fedsender-e2e")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("fedsender stderr:\n%s", stderr.String())
		}
	})

	const eventID = "$refused-1"
	r := receiver.Start(t, receiver.Options{Origin: origin, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
		Cert: ca.MustLeaf(t, "127.0.0.1"), KeepHeaders: true})
	r.SetFault(receiver.Fault{PDUErrors: map[string]string{eventID: "not allowed"}})
	down := receiver.Start(t, receiver.Options{Origin: origin, OriginKey: key.Public(), OriginKeyID: key.KeyID(),
		Cert: ca.MustLeaf(t, "127.0.0.1")})
	down.Stop() // connection refused: a network failure, then backoff
	nc := connectWithin(t, fmt.Sprintf("nats://127.0.0.1:%d", natsPort), 60*time.Second)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := json.Marshal(streams.Envelope{RoomID: "!r:origin.test", EventID: eventID, Destinations: []string{r.ServerName(), down.ServerName()},
		PDU: json.RawMessage(`{"event_id":"` + eventID + `","type":"m.room.message","room_id":"!r:origin.test"}`)})
	if _, _, err := streams.NewPublisher(js).Publish(t.Context(), env); err != nil {
		t.Fatal(err)
	}
	r.WaitPDUs(t, 1)

	// /metrics parses as Prometheus text and shows the delivery.
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	var families map[string]*dto.MetricFamily
	eventually(t, 20*time.Second, func() bool {
		families = scrape(t, url)
		return value(families["fedsender_federation_client_sent_transactions_total"], nil) >= 1 &&
			value(families["fedsender_federation_client_failed_transactions_total"], map[string]string{"class": "network"}) >= 1 &&
			value(families["fedsender_federation_destinations"], map[string]string{"state": "healthy"}) == 1 &&
			value(families["fedsender_federation_destinations"], map[string]string{"state": "backing_off"}) == 1
	}, "the scrape never showed one healthy destination with its transaction and one backing off after a failure: %v", names(families))
	for name, typ := range map[string]dto.MetricType{
		"fedsender_federation_client_sent_pdus_total":                       dto.MetricType_COUNTER,
		"fedsender_federation_client_pdu_errors_total":                      dto.MetricType_COUNTER,
		"fedsender_federation_client_sent_pdu_destinations_count_total":     dto.MetricType_COUNTER,
		"fedsender_federation_client_sent_pdu_destinations_total":           dto.MetricType_COUNTER,
		"fedsender_federation_delivery_latency_seconds":                     dto.MetricType_HISTOGRAM,
		"fedsender_federation_backoff_interval_seconds":                     dto.MetricType_HISTOGRAM,
		"fedsender_federation_transaction_queue_pending_pdus":               dto.MetricType_GAUGE,
		"fedsender_federation_transaction_queue_oldest_pending_age_seconds": dto.MetricType_GAUGE,
		"fedsender_projection_lag_events":                                   dto.MetricType_GAUGE,
		"go_goroutines":                                                     dto.MetricType_GAUGE,
	} {
		f := families[name]
		if f == nil || f.GetType() != typ {
			t.Errorf("%s: %v, want a %v", name, f, typ)
		}
	}
	if v := value(families["fedsender_federation_client_pdu_errors_total"], nil); v != 1 {
		t.Errorf("pdu errors = %v, want 1", v)
	}
	// Every metric the Grafana dashboard queries exists.
	dashboard, err := os.ReadFile("../../deploy/grafana/fedsender.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`fedsender_[a-z_]+`).FindAllString(string(dashboard), -1) {
		if families[strings.TrimSuffix(name, "_bucket")] == nil {
			t.Errorf("the dashboard queries %s, which /metrics does not serve", name)
		}
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "destination" {
					t.Errorf("%s has a destination label without metrics.per_destination_labels", f.GetName())
				}
			}
		}
	}

	// The per-PDU error is logged as JSON inside the transaction's span.
	var record map[string]any
	eventually(t, 10*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "destination refused a PDU" {
				record = rec
				return true
			}
		}
		return false
	}, "no JSON log record of the refused PDU")
	traceID, _ := record["trace_id"].(string)
	spanID, _ := record["span_id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(traceID) || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(spanID) {
		t.Fatalf("log record without trace and span ids: %v", record)
	}

	// A graceful stop flushes the spans to the console exporter (stdout).
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fedsender did not stop cleanly: %v", err)
	}
	stopped = true
	out := stdout.String()
	if !strings.Contains(out, `"TraceID":"`+traceID+`"`) || !strings.Contains(out, `"SpanID":"`+spanID+`"`) || !strings.Contains(out, `"Name":"fedsender.transaction"`) {
		t.Errorf("the exported spans do not include the logged transaction span %s/%s:\n%.2000s", traceID, spanID, out)
	}
	// The build, as `fedsender version` prints it.
	if v := value(families["fedsender_build_info"], map[string]string{"goversion": runtime.Version()}); v != 1 {
		t.Errorf("fedsender_build_info{goversion=%q} = %v, want 1", runtime.Version(), v)
	}
	noTraceHeaders(t, r)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil // not listening yet
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want the Prometheus text format", url, ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the scrape does not parse as Prometheus text: %v\n%s", err, body)
	}
	return families
}

// value is the value of f's first metric whose labels include want
// (counters, gauges; histograms: the sample count).
func value(f *dto.MetricFamily, want map[string]string) float64 {
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func names(fs map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range fs {
		if strings.HasPrefix(n, "fedsender_") {
			out = append(out, n)
		}
	}
	return out
}

// lockedBuffer collects a child process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
