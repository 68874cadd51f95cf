package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/streams"
)

// adminResult is the admin part's outcome: the latency of the HTTP admin
// API's destinations list at many destinations, per order_by.
type adminResult struct {
	Destinations int `json:"destinations"`
	// Load is from the service's start to a complete list (the KV
	// projection written and indexed).
	Load     float64        `json:"load_seconds"`
	Orders   []listLatency  `json:"orders"`
	Search   listLatency    `json:"search"`
	Visible  latencySummary `json:"visible"`
	WorstP99 float64        `json:"worst_p99_ms"`
}

// listLatency is one kind of list request's latency.
type listLatency struct {
	OrderBy string `json:"order_by"`
	latencySummary
}

type latencySummary struct {
	Requests int     `json:"requests"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
}

func summarize(ds []time.Duration) latencySummary {
	if len(ds) == 0 {
		return latencySummary{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return latencySummary{Requests: len(ds), P50: ms(at(0.50)), P99: ms(at(0.99)), Max: ms(ds[len(ds)-1])}
}

// runAdmin preloads destinations (a quarter failing, with spread timings
// and stream orderings, so that every order has ties and real work),
// starts fedsender on them, and times GET .../destinations over HTTP:
// pages of 100 at random offsets, each order_by in both directions, then
// substring searches; and how long a new state takes to show.
func runAdmin(ctx context.Context, e *env) (*adminResult, error) {
	n := e.p.adminDests
	cfg, err := e.config("admin", nil)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	if err := preloadStates(ctx, cfg.DataDir, n, cfg.Queue.Partitions); err != nil {
		return nil, err
	}
	e.progress("admin: %d destinations preloaded in %.1fs", n, time.Since(began).Seconds())
	began = time.Now()
	in, err := e.startService(cfg)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	res := &adminResult{Destinations: n}
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if total, err := listTotal(client, in.svc.AdminAddr); err == nil && total == n {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("the admin API did not list %d destinations within 5 minutes", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.Load = time.Since(began).Seconds()
	e.progress("admin: all %d listed %.1fs after start", n, res.Load)

	r := rand.New(rand.NewPCG(1, 2))
	perOrder := e.p.adminRequests
	for _, o := range projection.Orders() {
		var ds []time.Duration
		for i := range perOrder {
			dir := "f"
			if i%2 == 1 {
				dir = "b"
			}
			q := url.Values{"order_by": {o.String()}, "dir": {dir}, "limit": {"100"}, "from": {strconv.Itoa(r.IntN(n))}}
			d, err := timeList(client, in.svc.AdminAddr, q)
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		l := listLatency{OrderBy: o.String(), latencySummary: summarize(ds)}
		res.Orders = append(res.Orders, l)
		res.WorstP99 = max(res.WorstP99, l.P99)
		e.progress("admin: order_by=%s p50 %.2f ms p99 %.2f ms", o, l.P50, l.P99)
	}
	var ds []time.Duration
	for i := range perOrder {
		o := projection.Orders()[i%5]
		q := url.Values{"order_by": {o.String()}, "limit": {"100"}, "destination": {strconv.Itoa(r.IntN(1000))}}
		d, err := timeList(client, in.svc.AdminAddr, q)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	res.Search = listLatency{OrderBy: "any, with destination=<search>", latencySummary: summarize(ds)}
	res.WorstP99 = max(res.WorstP99, res.Search.P99)

	vis, err := timeVisibility(ctx, in, client, e.p.adminVisible)
	if err != nil {
		return nil, err
	}
	res.Visible = summarize(vis)
	return res, nil
}

// timeList times one list request and checks its answer.
func timeList(c *http.Client, addr string, q url.Values) (time.Duration, error) {
	start := time.Now()
	code, body := adminCallWith(c, "GET", addr, "/_synapse/admin/v1/federation/destinations?"+q.Encode())
	d := time.Since(start)
	if code != http.StatusOK {
		return 0, fmt.Errorf("list %s answered %d: %.200s", q.Encode(), code, body)
	}
	return d, nil
}

func listTotal(c *http.Client, addr string) (int, error) {
	code, body := adminCallWith(c, "GET", addr, "/_synapse/admin/v1/federation/destinations?limit=0")
	if code != http.StatusOK {
		return 0, fmt.Errorf("list answered %d", code)
	}
	var out struct {
		Total int `json:"total"`
	}
	err := json.Unmarshal(body, &out)
	return out.Total, err
}

// timeVisibility appends the first event of new destinations and times how
// long each takes to show in the admin API's details.
func timeVisibility(ctx context.Context, in *instance, c *http.Client, samples int) ([]time.Duration, error) {
	store, err := eventlog.Open(ctx, in.js)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := range samples {
		name := fmt.Sprintf("visible%03d.bench.example", i)
		now := time.Now().UnixMilli()
		ev := destination.Event{Type: destination.Failed, At: now, Interval: 3_600_000,
			State: destination.State{Destination: name, FailureTS: now, RetryLastTS: now, RetryInterval: 3_600_000}}
		start := time.Now()
		if _, err := store.Append(ctx, streams.Partition(name, 64), ev, 0); err != nil {
			return nil, err
		}
		for {
			code, _ := adminCallWith(c, "GET", in.svc.AdminAddr, "/_synapse/admin/v1/federation/destinations/"+name)
			if code == http.StatusOK {
				break
			}
			if time.Since(start) > 10*time.Second {
				return nil, fmt.Errorf("%s not shown within 10s of its event", name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// preloadStates writes n destinations into dataDir's NATS store: each one's
// state as its first event, and its offset.
func preloadStates(ctx context.Context, dataDir string, n, partitions int) error {
	s, err := startNATS(filepath.Join(dataDir, "nats"))
	if err != nil {
		return err
	}
	defer s.close()
	if err := streams.Ensure(ctx, s.js, streams.Options{}); err != nil {
		return err
	}
	store, err := eventlog.Open(ctx, s.js)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(3, 4))
	now := time.Now().UnixMilli()
	futures := make([]jetstream.PubAckFuture, 0, 2000)
	for i := range n {
		name := fmt.Sprintf("d%06d.bench.example", i)
		if i%10 == 3 {
			name = fmt.Sprintf("d%06d.bench.example:%d", i, 8000+i%1000)
		}
		st := destination.State{Destination: name, Offset: uint64(r.IntN(50_000) + 1)}
		typ := destination.Recovered
		if i%4 == 0 {
			typ = destination.Failed
			st.FailureTS = now - int64(r.IntN(7*24*3600))*1000
			st.RetryLastTS = now - int64(r.IntN(600))*1000
			st.RetryInterval = int64(600_000) << r.IntN(10) // 10 min to 3.5 days: in the future
		}
		part := streams.Partition(name, partitions)
		f, err := store.AppendAsync(part, destination.Event{Type: typ, At: now, Offset: st.Offset, State: st}, 0)
		if err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		futures = append(futures, f)
		f, err = s.js.PublishAsync("$KV."+streams.OffsetBucket+"."+streams.OffsetKey(part, name),
			[]byte(strconv.FormatUint(st.Offset, 10)))
		if err != nil {
			return fmt.Errorf("preload: offset: %w", err)
		}
		futures = append(futures, f)
		if len(futures) == cap(futures) || i == n-1 {
			for _, f := range futures {
				if _, err := eventlog.AckResult(ctx, f); err != nil {
					return fmt.Errorf("preload: %w", err)
				}
			}
			futures = futures[:0]
		}
	}
	return nil
}

// adminCallWith is adminCall on a shared keep-alive client.
func adminCallWith(c *http.Client, method, addr, path string) (int, []byte) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// printAdmin adds the admin part's rows to the table.
func (r *results) printAdmin(row func(name, value, lo, hi, setup string)) {
	a := r.admin
	if a == nil {
		row("admin list p99 ms", "-", "", "", skipped(r, "admin"))
		return
	}
	row("admin list p99 ms", f2(a.WorstP99), "", "", fmt.Sprintf("GET .../destinations over HTTP, %d destinations, pages of 100 at random from; worst of the rows below; target < 20",
		a.Destinations))
	for _, l := range a.Orders {
		row("  order_by="+l.OrderBy, f2(l.P99), f2(l.P50), f2(l.Max), fmt.Sprintf("p99 (min column: p50, max column: max) of %d requests, dir f and b", l.Requests))
	}
	row("  destination=<search>", f2(a.Search.P99), f2(a.Search.P50), f2(a.Search.Max),
		fmt.Sprintf("%d searches for a random number below 1000 (mostly never asked before: a scan of every name), order_by rotated", a.Search.Requests))
	row("  state change visible p99 ms", f1(a.Visible.P99), f1(a.Visible.P50), f1(a.Visible.Max),
		fmt.Sprintf("new event → details answer 200, %d samples; target < 1000; all listed %.1fs after start", a.Visible.Requests, a.Load))
}
