package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/eventlog"
	"github.com/fedsender/fedsender/internal/service"
	"github.com/fedsender/fedsender/streams"
)

// rssResult is the memory an idle known destination costs.
type rssResult struct {
	Destinations int        `json:"destinations"`
	Without      childStats `json:"without"`
	With         childStats `json:"with"`
	PerDest      float64    `json:"rss_bytes_per_idle_destination"`
	Preload      float64    `json:"preload_seconds"`
}

// childStats is what one child process reported and what was read of it.
type childStats struct {
	RSS        int64   `json:"vm_rss_bytes"`
	HeapInuse  int64   `json:"heap_inuse_bytes"`
	Goroutines int     `json:"goroutines"`
	Known      int     `json:"destinations_listed"` // the admin API's total; -1 if it did not answer
	Startup    float64 `json:"seconds_to_ready"`
}

// runRSS starts fedsender in a child process on a data directory without
// destinations and on one with p.idleDests healthy, idle ones, and compares
// their resident memory.
func runRSS(ctx context.Context, e *env) (*rssResult, error) {
	n := e.p.idleDests
	res := &rssResult{Destinations: n}
	dirs := [2]string{filepath.Join(e.root, "rss-0"), filepath.Join(e.root, "rss-n")}
	for i, dir := range dirs {
		t := time.Now()
		count := 0
		if i == 1 {
			count = n
		}
		if err := preload(ctx, dir, count, 64); err != nil {
			return nil, err
		}
		if i == 1 {
			res.Preload = time.Since(t).Seconds()
			e.progress("rss: %d destinations written to the event log and the offsets bucket in %.1fs", n, res.Preload)
		}
	}
	var err error
	if res.Without, err = runChild(ctx, e, dirs[0]); err != nil {
		return nil, fmt.Errorf("child without destinations: %w", err)
	}
	e.progress("rss: 0 destinations: VmRSS %s", mib(res.Without.RSS))
	if res.With, err = runChild(ctx, e, dirs[1]); err != nil {
		return nil, fmt.Errorf("child with %d destinations: %w", n, err)
	}
	e.progress("rss: %d destinations: VmRSS %s", n, mib(res.With.RSS))
	if res.With.Known >= 0 && res.With.Known != n {
		return nil, fmt.Errorf("the child with %d preloaded destinations lists %d in the admin API", n, res.With.Known)
	}
	res.PerDest = float64(res.With.RSS-res.Without.RSS) / float64(n)
	return res, nil
}

// preload creates fedsender's streams in dataDir's NATS store and writes n
// healthy destinations: a Recovered event carrying State{Destination,
// Offset} in each one's log and the offset in the offsets bucket.
func preload(ctx context.Context, dataDir string, n, partitions int) error {
	s, err := startNATS(filepath.Join(dataDir, "nats"))
	if err != nil {
		return err
	}
	defer s.close()
	if err := streams.Ensure(ctx, s.js, streams.Options{}); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	store, err := eventlog.Open(ctx, s.js)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	const batch = 1000
	futures := make([]jetstream.PubAckFuture, 0, 2*batch)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("d%05d.bench.example", i)
		part := streams.Partition(name, partitions)
		offset := uint64(i%5000 + 1)
		f, err := store.AppendAsync(part, destination.Event{
			Type: destination.Recovered, At: now, Offset: offset,
			State: destination.State{Destination: name, Offset: offset},
		}, 0)
		if err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		futures = append(futures, f)
		f, err = s.js.PublishAsync("$KV."+streams.OffsetBucket+"."+streams.OffsetKey(part, name),
			[]byte(strconv.FormatUint(offset, 10)))
		if err != nil {
			return fmt.Errorf("preload: offset: %w", err)
		}
		futures = append(futures, f)
		if len(futures) >= 2*batch || i == n-1 {
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

// runChild runs this program with -child-rss on dataDir, waits until the
// child's fedsender is ready with every destination loaded and has
// collected its garbage, and reads its VmRSS.
func runChild(ctx context.Context, e *env, dataDir string) (childStats, error) {
	st := childStats{Known: -1}
	exe, err := os.Executable()
	if err != nil {
		return st, err
	}
	cmd := exec.Command(exe, "-child-rss", dataDir, "-child-key", e.keyPath)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return st, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return st, err
	}
	t := time.Now()
	if err := cmd.Start(); err != nil {
		return st, err
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	// finish ends the child: it stops when its stdin closes.
	finish := func() error {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("child exited: %w", err)
			}
			return nil
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			return errors.New("child did not stop within 30s; killed")
		}
	}
	var line string
	select {
	case line = <-lines:
	case err := <-exited:
		return st, fmt.Errorf("child exited before it was ready: %v", err)
	case <-time.After(3 * time.Minute):
		finish()
		return st, errors.New("child not ready within 3 minutes")
	case <-ctx.Done():
		finish()
		return st, ctx.Err()
	}
	st.Startup = time.Since(t).Seconds()
	var addr string
	if _, err := fmt.Sscanf(line, "READY %s %d %d", &addr, &st.HeapInuse, &st.Goroutines); err != nil {
		finish()
		return st, fmt.Errorf("child said %q: %v", line, err)
	}
	if code, body := adminCall(http.MethodGet, addr, "/readyz"); code != http.StatusOK {
		finish()
		return st, fmt.Errorf("child's /readyz answered %d %s", code, body)
	}
	st.RSS, err = vmRSS(cmd.Process.Pid)
	if err != nil {
		finish()
		return st, err
	}
	if code, body := adminCall(http.MethodGet, addr, "/_synapse/admin/v1/federation/destinations?limit=1"); code == http.StatusOK {
		var list struct {
			Total int `json:"total"`
		}
		if json.Unmarshal(body, &list) == nil {
			st.Known = list.Total
		}
	}
	return st, finish()
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read VmRSS: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// adminCall calls fedsender's admin listener with the bench's token.
func adminCall(method, addr, path string) (int, []byte) {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body
}

// childRSS is the child process of the rss part: it runs fedsender on
// dataDir, waits until /readyz answers 200, collects garbage and returns
// memory to the OS, says "READY <admin address> <heap in use>
// <goroutines>" on stdout, and stops when stdin closes.
func childRSS(dataDir, keyPath string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "fedsender-bench child: "+format+"\n", args...)
		return 1
	}
	cfg := baseConfig(dataDir, keyPath)
	if err := cfg.Validate(); err != nil {
		return fail("configuration: %v", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ready := make(chan *service.Service, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, service.Deps{Log: errLogger, Ready: ready})
	}()
	var svc *service.Service
	select {
	case svc = <-ready:
	case err := <-done:
		return fail("fedsender did not start: %v", err)
	case <-time.After(3 * time.Minute):
		return fail("fedsender did not start within 3 minutes")
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, _ := adminCall(http.MethodGet, svc.AdminAddr, "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return fail("/readyz did not answer 200 within 3 minutes (last: %d)", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Let start-up work (first checkpoints, idle timers) settle.
	time.Sleep(2 * time.Second)
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("READY %s %d %d\n", svc.AdminAddr, ms.HeapInuse, runtime.NumGoroutine())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	<-ctx.Done()
	select {
	case err := <-done:
		if err != nil {
			return fail("fedsender stopped with an error: %v", err)
		}
	case <-time.After(30 * time.Second):
		return fail("fedsender did not stop within 30s")
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
