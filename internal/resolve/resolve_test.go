package resolve_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/servername"
)

func TestResolveAlgorithm(t *testing.T) {
	e := newEnv(t)
	// 2: explicit port. SRV records and a .well-known exist and must be ignored.
	e.dns.Add(t,
		"port.test. 60 IN A 10.0.0.1",
		"_matrix-fed._tcp.port.test. 60 IN SRV 10 0 9999 elsewhere.test.",
	)
	e.wk.handle("port.test", jsonHandler(`{"m.server": "5.6.7.8:1"}`))
	e.dns.Add(t, "dual.test. 60 IN A 10.0.0.9", "dual.test. 60 IN AAAA 2001:db8::9")

	// 3.1: delegation to IP literals.
	e.delegate(t, "wk-ip.test", "5.6.7.8:9999")
	e.delegate(t, "wk-ip6.test", "[2001:db8::2]")
	// 3.2: delegation to a hostname with a port; its SRV records are ignored.
	e.delegate(t, "wk-port.test", "deleg-port.test:4443")
	e.dns.Add(t,
		"deleg-port.test. 60 IN A 10.0.0.2",
		"_matrix-fed._tcp.deleg-port.test. 60 IN SRV 10 0 9999 elsewhere.test.",
	)
	// 3.3: delegated name with _matrix-fed SRV (wins over _matrix and 8448).
	e.delegate(t, "wk-srv.test", "deleg-srv.test")
	e.dns.Add(t,
		"_matrix-fed._tcp.deleg-srv.test. 60 IN SRV 10 0 7000 t1.test.",
		"_matrix._tcp.deleg-srv.test. 60 IN SRV 10 0 9999 elsewhere.test.",
		"deleg-srv.test. 60 IN A 10.0.0.99",
		"t1.test. 60 IN A 10.0.0.3",
	)
	// 3.4: delegated name with only the deprecated _matrix SRV.
	e.delegate(t, "wk-legacy.test", "deleg-legacy.test")
	e.dns.Add(t,
		"_matrix._tcp.deleg-legacy.test. 60 IN SRV 10 0 7001 t2.test.",
		"deleg-legacy.test. 60 IN A 10.0.0.99",
		"t2.test. 60 IN A 10.0.0.4",
	)
	// 3.5: delegated name without SRV.
	e.delegate(t, "wk-plain.test", "deleg-plain.test")
	e.dns.Add(t, "deleg-plain.test. 60 IN A 10.0.0.5")
	// 4, 5, 6: no .well-known (404).
	e.serve(t, "srv.test", http.NotFound)
	e.dns.Add(t,
		"_matrix-fed._tcp.srv.test. 60 IN SRV 10 0 7002 t3.test.",
		"_matrix._tcp.srv.test. 60 IN SRV 10 0 9999 elsewhere.test.",
		"t3.test. 60 IN A 10.0.0.6",
	)
	e.serve(t, "legacy.test", http.NotFound)
	e.dns.Add(t,
		"_matrix._tcp.legacy.test. 60 IN SRV 10 0 7003 t4.test.",
		"t4.test. 60 IN A 10.0.0.7",
	)
	e.serve(t, "plain.test", http.NotFound)
	e.dns.Add(t, "elsewhere.test. 60 IN A 10.9.9.9")

	r := e.resolver(t, nil)
	tests := []struct {
		step, name string
		want       resolve.Target
	}{
		{"1 IPv4", "1.2.3.4", resolve.Target{Host: "1.2.3.4", TLSServerName: "1.2.3.4", Addrs: []string{"1.2.3.4:8448"}}},
		{"1 IPv4 port", "1.2.3.4:1234", resolve.Target{Host: "1.2.3.4:1234", TLSServerName: "1.2.3.4", Addrs: []string{"1.2.3.4:1234"}}},
		{"1 IPv6", "[2001:db8::1]", resolve.Target{Host: "[2001:db8::1]", TLSServerName: "2001:db8::1", Addrs: []string{"[2001:db8::1]:8448"}}},
		{"1 IPv6 port", "[2001:db8::1]:443", resolve.Target{Host: "[2001:db8::1]:443", TLSServerName: "2001:db8::1", Addrs: []string{"[2001:db8::1]:443"}}},
		{"2 explicit port", "port.test:1234", resolve.Target{Host: "port.test:1234", TLSServerName: "port.test", Addrs: []string{"10.0.0.1:1234"}}},
		{"2 A and AAAA", "dual.test:1234", resolve.Target{Host: "dual.test:1234", TLSServerName: "dual.test", Addrs: []string{"10.0.0.9:1234", "[2001:db8::9]:1234"}}},
		{"3.1 IP literal", "wk-ip.test", resolve.Target{Host: "5.6.7.8:9999", TLSServerName: "5.6.7.8", Addrs: []string{"5.6.7.8:9999"}}},
		{"3.1 IPv6 literal", "wk-ip6.test", resolve.Target{Host: "[2001:db8::2]", TLSServerName: "2001:db8::2", Addrs: []string{"[2001:db8::2]:8448"}}},
		{"3.2 explicit port", "wk-port.test", resolve.Target{Host: "deleg-port.test:4443", TLSServerName: "deleg-port.test", Addrs: []string{"10.0.0.2:4443"}}},
		{"3.3 _matrix-fed SRV", "wk-srv.test", resolve.Target{Host: "deleg-srv.test", TLSServerName: "deleg-srv.test", Addrs: []string{"10.0.0.3:7000"}}},
		{"3.4 _matrix SRV", "wk-legacy.test", resolve.Target{Host: "deleg-legacy.test", TLSServerName: "deleg-legacy.test", Addrs: []string{"10.0.0.4:7001"}}},
		{"3.5 port 8448", "wk-plain.test", resolve.Target{Host: "deleg-plain.test", TLSServerName: "deleg-plain.test", Addrs: []string{"10.0.0.5:8448"}}},
		{"4 _matrix-fed SRV", "srv.test", resolve.Target{Host: "srv.test", TLSServerName: "srv.test", Addrs: []string{"10.0.0.6:7002"}}},
		{"5 _matrix SRV", "legacy.test", resolve.Target{Host: "legacy.test", TLSServerName: "legacy.test", Addrs: []string{"10.0.0.7:7003"}}},
		{"6 port 8448", "plain.test", resolve.Target{Host: "plain.test", TLSServerName: "plain.test", Addrs: []string{"127.0.0.1:8448"}}},
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			got := resolveOK(t, r, tt.name)
			tt.want.ServerName = tt.name
			if tt.step == "2 A and AAAA" { // address family order is the resolver's choice
				slices.Sort(got.Addrs)
			}
			assertTarget(t, got, tt.want)
		})
	}
	t.Run("no lookups for IP literals and explicit ports", func(t *testing.T) {
		if n := e.wk.hitCount("port.test"); n != 0 {
			t.Errorf(".well-known of port.test fetched %d times, want 0", n)
		}
		if n := e.dns.Queries("_matrix-fed._tcp.port.test", dns.TypeSRV); n != 0 {
			t.Errorf("SRV of port.test queried %d times, want 0", n)
		}
		if n := e.dns.Queries("_matrix-fed._tcp.deleg-port.test", dns.TypeSRV); n != 0 {
			t.Errorf("SRV of deleg-port.test queried %d times, want 0", n)
		}
		if n := e.dns.Queries("elsewhere.test", dns.TypeA); n != 0 {
			t.Errorf("a lower-precedence SRV target was resolved %d times", n)
		}
	})
}

func TestSRVOrdering(t *testing.T) {
	e := newEnv(t)
	e.serve(t, "many.test", http.NotFound)
	e.dns.Add(t,
		"_matrix-fed._tcp.many.test. 60 IN SRV 30 0 3003 c.test.",
		"_matrix-fed._tcp.many.test. 60 IN SRV 10 0 3001 a.test.",
		"_matrix-fed._tcp.many.test. 60 IN SRV 20 0 3002 b.test.",
		"_matrix-fed._tcp.many.test. 60 IN SRV 20 100 3005 e.test.",  // weight 100 beats weight 0
		"_matrix-fed._tcp.many.test. 60 IN SRV 25 0 3009 dead.test.", // no address: skipped
		"_matrix-fed._tcp.many.test. 60 IN SRV 40 0 3001 a.test.",    // duplicate candidate: dropped
		"a.test. 60 IN A 10.1.0.1",
		"b.test. 60 IN A 10.1.0.2",
		"c.test. 60 IN A 10.1.0.3",
		"c.test. 60 IN A 10.1.0.4",
		"e.test. 60 IN A 10.1.0.5",
	)
	// Each call must re-run the lookup, so that weight ordering is tested
	// many times rather than served from the cache.
	r := e.resolver(t, func(o *resolve.Options) { o.DNSCacheTTL = time.Nanosecond })
	want := []string{"10.1.0.1:3001", "10.1.0.5:3005", "10.1.0.2:3002", "10.1.0.3:3003", "10.1.0.4:3003"}
	for i := 0; i < 20; i++ {
		got := resolveOK(t, r, "many.test")
		// Addresses of one target may come in either order.
		if len(got.Addrs) == len(want) && got.Addrs[3] > got.Addrs[4] {
			got.Addrs[3], got.Addrs[4] = got.Addrs[4], got.Addrs[3]
		}
		if !slices.Equal(got.Addrs, want) {
			t.Fatalf("Addrs = %v, want %v", got.Addrs, want)
		}
		e.clock.advance(time.Second)
	}
}

func TestSRVWeightsWithinPriority(t *testing.T) {
	e := newEnv(t)
	e.serve(t, "weights.test", http.NotFound)
	e.dns.Add(t,
		"_matrix-fed._tcp.weights.test. 60 IN SRV 10 50 1 x.test.",
		"_matrix-fed._tcp.weights.test. 60 IN SRV 10 50 2 y.test.",
		"x.test. 60 IN A 10.4.0.1",
		"y.test. 60 IN A 10.4.0.2",
	)
	r := e.resolver(t, func(o *resolve.Options) { o.DNSCacheTTL = time.Nanosecond })
	first := map[string]int{}
	for i := 0; i < 200; i++ {
		got := resolveOK(t, r, "weights.test")
		if len(got.Addrs) != 2 {
			t.Fatalf("Addrs = %v, want both targets", got.Addrs)
		}
		first[got.Addrs[0]]++
		e.clock.advance(time.Second)
	}
	// Equal weights: each target should come first sometimes (the chance
	// of one never doing so in 200 tries is 2^-199).
	if first["10.4.0.1:1"] == 0 || first["10.4.0.2:2"] == 0 {
		t.Errorf("weighted shuffle never varied the first target: %v", first)
	}
}

func TestResolveErrors(t *testing.T) {
	e := newEnv(t)
	e.serve(t, "unavailable.test", http.NotFound)
	e.dns.Add(t, "_matrix-fed._tcp.unavailable.test. 60 IN SRV 0 0 0 .")
	e.serve(t, "deadsrv.test", http.NotFound)
	e.dns.Add(t, "_matrix-fed._tcp.deadsrv.test. 60 IN SRV 10 0 8448 nowhere.test.")
	e.dns.Add(t, "noaddr.test. 60 IN TXT \"no addresses here\"")
	r := e.resolver(t, nil)

	tests := []struct {
		name string
		want error
	}{
		{"not a name", servername.ErrInvalid},
		{"[::1", servername.ErrInvalid},
		{"nx.test", resolve.ErrNoAddresses},
		{"nx.test:8448", resolve.ErrNoAddresses},
		{"noaddr.test:8448", resolve.ErrNoAddresses},
		{"deadsrv.test", resolve.ErrNoAddresses},
		{"unavailable.test", resolve.ErrServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := r.Resolve(ctx, tt.name)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Resolve(%q) = %+v, %v; want an error wrapping %v", tt.name, got, err, tt.want)
			}
		})
	}
}

func TestWellKnownBadResponses(t *testing.T) {
	e := newEnv(t)
	big := `{"m.server": "5.6.7.8:3"}` + strings.Repeat(" ", 50*1024)
	atLimit := `{"m.server": "5.6.7.8:4"}`
	atLimit += strings.Repeat(" ", 50*1024-len(atLimit))
	tests := []struct {
		host      string
		h         http.HandlerFunc
		delegated string // "" = falls back to the host itself
	}{
		{"status500.test", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"m.server": "5.6.7.8:1"}`, http.StatusInternalServerError)
		}, ""},
		{"status404.test", http.NotFound, ""},
		{"notjson.test", jsonHandler(`hello`), ""},
		{"empty.test", jsonHandler(``), ""},
		{"array.test", jsonHandler(`["m.server"]`), ""},
		{"missing.test", jsonHandler(`{"m.homeserver": "5.6.7.8"}`), ""},
		{"number.test", jsonHandler(`{"m.server": 42}`), ""},
		{"null.test", jsonHandler(`{"m.server": null}`), ""},
		{"badname.test", jsonHandler(`{"m.server": "bad name!"}`), ""},
		{"badport.test", jsonHandler(`{"m.server": "example.org:99999"}`), ""},
		{"truncated.test", jsonHandler(`{"m.server": "5.6.7.8:1"`), ""},
		{"toobig.test", jsonHandler(big), ""},
		{"atlimit.test", jsonHandler(atLimit), "5.6.7.8:4"},
		{"extra.test", jsonHandler(`{"m.server": "5.6.7.8:5", "other": [1, {"x": null}]}`), "5.6.7.8:5"},
	}
	for _, tt := range tests {
		e.serve(t, tt.host, tt.h)
	}
	r := e.resolver(t, nil)
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got := resolveOK(t, r, tt.host)
			want := resolve.Target{ServerName: tt.host, Host: tt.host, TLSServerName: tt.host, Addrs: []string{"127.0.0.1:8448"}}
			if tt.delegated != "" {
				ip, _, _ := strings.Cut(tt.delegated, ":")
				want = resolve.Target{ServerName: tt.host, Host: tt.delegated, TLSServerName: ip, Addrs: []string{tt.delegated}}
			}
			assertTarget(t, got, want)
			if n := e.wk.hitCount(tt.host); n != 1 {
				t.Errorf(".well-known fetched %d times, want 1", n)
			}
		})
	}
}

func TestWellKnownRedirects(t *testing.T) {
	e := newEnv(t)
	// hops(n) serves a chain of n redirects under /hop/, then the answer.
	hops := func(n int, final string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var i int
			fmt.Sscanf(r.URL.Path, "/hop/%d", &i)
			if i < n {
				http.Redirect(w, r, fmt.Sprintf("/hop/%d", i+1), http.StatusFound)
				return
			}
			jsonHandler(fmt.Sprintf(`{"m.server": %q}`, final))(w, r)
		}
	}
	e.serve(t, "redir.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("https://redir-target.test:%d/somewhere", e.wk.port), http.StatusMovedPermanently)
	})
	e.delegate(t, "redir-target.test", "5.6.7.8:1")
	e.serve(t, "ten.test", hops(10, "5.6.7.8:10"))
	e.serve(t, "eleven.test", hops(11, "5.6.7.8:11"))
	e.serve(t, "plainhttp.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("http://redir-target.test:%d/x", e.wk.port), http.StatusFound)
	})
	r := e.resolver(t, nil)

	tests := []struct {
		host, delegated string
	}{
		{"redir.test", "5.6.7.8:1"},
		{"ten.test", "5.6.7.8:10"},
		{"eleven.test", ""},
		{"plainhttp.test", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got := resolveOK(t, r, tt.host)
			want := tt.delegated
			if want == "" {
				want = tt.host
			}
			if got.Host != want {
				t.Errorf("Host = %q, want %q", got.Host, want)
			}
		})
	}
}

func TestWellKnownCaching(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		headers      []string
		fresh, stale time.Duration // the answer is reused at fresh, fetched again at stale
	}{
		{"max-age", []string{"Cache-Control", "public, max-age=3600"}, 59 * time.Minute, 61 * time.Minute},
		{"max-age capped at 48h", []string{"Cache-Control", "max-age=604800"}, 47 * time.Hour, 49 * time.Hour},
		{"default 24h", nil, 23 * time.Hour, 27 * time.Hour},
		{"Expires", []string{"Expires", start.Add(2 * time.Hour).Format(http.TimeFormat)}, 119 * time.Minute, 121 * time.Minute},
		{"max-age wins over Expires", []string{"Cache-Control", "max-age=600", "Expires", start.Add(5 * time.Hour).Format(http.TimeFormat)}, 9 * time.Minute, 11 * time.Minute},
		{"no-store: at least 5 min", []string{"Cache-Control", "no-store"}, 4 * time.Minute, 6 * time.Minute},
		{"max-age=0: at least 5 min", []string{"Cache-Control", "max-age=0"}, 4 * time.Minute, 6 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.clock.now = start
			e.delegate(t, "cache.test", "5.6.7.8:1", tt.headers...)
			r := e.resolver(t, nil)
			resolveOK(t, r, "cache.test")
			e.clock.advance(tt.fresh)
			// The Target cache (5 min) has expired for the longer cases, so
			// only the .well-known cache prevents a second fetch.
			if got := resolveOK(t, r, "cache.test"); got.Host != "5.6.7.8:1" {
				t.Fatalf("Host = %q, want the delegation", got.Host)
			}
			if n := e.wk.hitCount("cache.test"); n != 1 {
				t.Fatalf("at +%v: .well-known fetched %d times, want 1", tt.fresh, n)
			}
			e.clock.advance(tt.stale - tt.fresh)
			resolveOK(t, r, "cache.test")
			if n := e.wk.hitCount("cache.test"); n != 2 {
				t.Fatalf("at +%v: .well-known fetched %d times, want 2", tt.stale, n)
			}
		})
	}
}

func TestWellKnownFailureCaching(t *testing.T) {
	t.Run("error TTL", func(t *testing.T) {
		e := newEnv(t)
		e.serve(t, "fail.test", http.NotFound)
		r := e.resolver(t, nil) // WellKnownErrorTTL 10 min
		resolveOK(t, r, "fail.test")
		e.clock.advance(9 * time.Minute)
		resolveOK(t, r, "fail.test")
		if n := e.wk.hitCount("fail.test"); n != 1 {
			t.Fatalf("failure not cached: fetched %d times", n)
		}
		e.clock.advance(2 * time.Minute)
		resolveOK(t, r, "fail.test")
		if n := e.wk.hitCount("fail.test"); n != 2 {
			t.Fatalf("failure cached too long: fetched %d times", n)
		}
	})
	t.Run("error TTL capped at 1h", func(t *testing.T) {
		e := newEnv(t)
		e.serve(t, "fail.test", http.NotFound)
		r := e.resolver(t, func(o *resolve.Options) { o.WellKnownErrorTTL = 5 * time.Hour })
		resolveOK(t, r, "fail.test")
		e.clock.advance(59 * time.Minute)
		resolveOK(t, r, "fail.test")
		if n := e.wk.hitCount("fail.test"); n != 1 {
			t.Fatalf("failure not cached: fetched %d times", n)
		}
		e.clock.advance(2 * time.Minute)
		resolveOK(t, r, "fail.test")
		if n := e.wk.hitCount("fail.test"); n != 2 {
			t.Fatalf("failure cached longer than 1h: fetched %d times", n)
		}
	})
	t.Run("valid delegation survives failed refreshes for 2h", func(t *testing.T) {
		e := newEnv(t)
		e.delegate(t, "flaky.test", "5.6.7.8:1", "Cache-Control", "max-age=3600")
		r := e.resolver(t, nil)
		resolveOK(t, r, "flaky.test")
		e.wk.handle("flaky.test", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down", http.StatusBadGateway)
		})
		e.clock.advance(61 * time.Minute)
		if got := resolveOK(t, r, "flaky.test"); got.Host != "5.6.7.8:1" {
			t.Errorf("after a failed refresh Host = %q, want the previous delegation", got.Host)
		}
		e.clock.advance(11 * time.Minute)
		if got := resolveOK(t, r, "flaky.test"); got.Host != "5.6.7.8:1" {
			t.Errorf("after two failed refreshes Host = %q, want the previous delegation", got.Host)
		}
		if n := e.wk.hitCount("flaky.test"); n != 3 {
			t.Errorf(".well-known fetched %d times, want 3", n)
		}
		e.clock.advance(2 * time.Hour) // 3h12m: past expiry (1h) + 2h
		if got := resolveOK(t, r, "flaky.test"); got.Host != "flaky.test" {
			t.Errorf("long after the delegation expired Host = %q, want the name itself", got.Host)
		}
	})
}

func TestDNSCache(t *testing.T) {
	e := newEnv(t)
	e.dns.Add(t, "ttl.test. 60 IN A 10.2.0.1")
	r := e.resolver(t, nil) // DNSCacheTTL 5 min
	resolveOK(t, r, "ttl.test:1")
	e.dns.Remove("ttl.test")
	e.dns.Add(t, "ttl.test. 60 IN A 10.2.0.2")
	e.clock.advance(4 * time.Minute)
	if got := resolveOK(t, r, "ttl.test:1"); !slices.Equal(got.Addrs, []string{"10.2.0.1:1"}) {
		t.Errorf("within the TTL Addrs = %v, want the cached answer", got.Addrs)
	}
	e.clock.advance(2 * time.Minute)
	if got := resolveOK(t, r, "ttl.test:1"); !slices.Equal(got.Addrs, []string{"10.2.0.2:1"}) {
		t.Errorf("after the TTL Addrs = %v, want the new answer", got.Addrs)
	}
}

func TestStaleTargetOnDNSFailure(t *testing.T) {
	e := newEnv(t)
	e.dns.Add(t, "stale.test. 60 IN A 10.3.0.1", "gone.test. 60 IN A 10.3.0.2")
	r := e.resolver(t, nil)
	resolveOK(t, r, "stale.test:1")
	resolveOK(t, r, "gone.test:1")

	e.dns.Fail("stale.test", true)
	e.dns.Remove("gone.test")
	e.clock.advance(6 * time.Minute)
	if got := resolveOK(t, r, "stale.test:1"); !slices.Equal(got.Addrs, []string{"10.3.0.1:1"}) {
		t.Errorf("with DNS failing Addrs = %v, want the stale answer", got.Addrs)
	}
	// NXDOMAIN is an answer, not a failure: no stale result.
	if _, err := r.Resolve(context.Background(), "gone.test:1"); !errors.Is(err, resolve.ErrNoAddresses) {
		t.Errorf("after the name vanished: err = %v, want ErrNoAddresses", err)
	}
	e.clock.advance(2 * time.Hour)
	if got, err := r.Resolve(context.Background(), "stale.test:1"); err == nil {
		t.Errorf("2h after expiry Resolve = %+v, want an error", got)
	}
	e.dns.Fail("stale.test", false)
	resolveOK(t, r, "stale.test:1")
}

func TestCacheIsBounded(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"c1", "c2", "c3"} {
		e.dns.Add(t, n+".test. 60 IN A 10.5.0.1")
	}
	r := e.resolver(t, func(o *resolve.Options) { o.MaxCacheEntries = 2 })
	for _, n := range []string{"c1", "c2", "c3"} {
		resolveOK(t, r, n+".test:1")
	}
	if n := r.CachedTargets(); n != 2 {
		t.Errorf("cache holds %d Targets, want 2", n)
	}
	resolveOK(t, r, "c3.test:1") // cached
	if n := e.dns.Queries("c3.test", dns.TypeA); n != 1 {
		t.Errorf("c3 looked up %d times, want 1 (cached)", n)
	}
	resolveOK(t, r, "c1.test:1") // evicted as least recently used
	if n := e.dns.Queries("c1.test", dns.TypeA); n != 2 {
		t.Errorf("c1 looked up %d times, want 2 (evicted)", n)
	}
}

func TestConcurrentResolvesShareOneLookup(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	e.serve(t, "flight.test", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		jsonHandler(`{"m.server": "5.6.7.8:1"}`)(w, r)
	})
	r := e.resolver(t, nil)
	const callers = 8
	type result struct {
		t   resolve.Target
		err error
	}
	results := make(chan result, callers)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < callers; i++ {
		go func() {
			t, err := r.Resolve(ctx, "flight.test")
			results <- result{t, err}
		}()
	}
	waitFor(t, "all callers to join the lookup", func() bool { return r.Waiters("flight.test") == callers })

	// A caller that gives up returns at once; the lookup goes on for the others.
	quitter, quit := context.WithCancel(ctx)
	quitErr := make(chan error, 1)
	go func() {
		_, err := r.Resolve(quitter, "flight.test")
		quitErr <- err
	}()
	waitFor(t, "the quitter to join", func() bool { return r.Waiters("flight.test") == callers+1 })
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want context.Canceled", err)
	}

	close(release)
	for i := 0; i < callers; i++ {
		res := <-results
		if res.err != nil || res.t.Host != "5.6.7.8:1" {
			t.Errorf("caller %d: %+v, %v", i, res.t, res.err)
		}
	}
	if n := e.wk.hitCount("flight.test"); n != 1 {
		t.Errorf(".well-known fetched %d times, want 1", n)
	}
}

// TestDefaultHTTPClientIsGuarded checks that without Options.HTTPClient the
// .well-known fetch refuses private addresses (here the loopback test server).
func TestDefaultHTTPClientIsGuarded(t *testing.T) {
	e := newEnv(t)
	e.delegate(t, "guarded.test", "5.6.7.8:1")
	r := e.resolver(t, func(o *resolve.Options) { o.HTTPClient = nil })
	if got := resolveOK(t, r, "guarded.test"); got.Host != "guarded.test" {
		t.Errorf("Host = %q: the default client fetched .well-known from loopback", got.Host)
	}
	if n := e.wk.conns.Load(); n != 0 {
		t.Errorf("the .well-known server on loopback accepted %d connections, want 0", n)
	}
}

func TestReturnedTargetIsACopy(t *testing.T) {
	e := newEnv(t)
	e.dns.Add(t, "copy.test. 60 IN A 10.6.0.1")
	r := e.resolver(t, nil)
	got := resolveOK(t, r, "copy.test:1")
	got.Addrs[0] = "mutated"
	if again := resolveOK(t, r, "copy.test:1"); again.Addrs[0] != "10.6.0.1:1" {
		t.Errorf("caller's change leaked into the cache: %v", again.Addrs)
	}
}

func resolveOK(t *testing.T, r *resolve.Resolver, name string) resolve.Target {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := r.Resolve(ctx, name)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", name, err)
	}
	return got
}

func assertTarget(t *testing.T, got, want resolve.Target) {
	t.Helper()
	if got.ServerName != want.ServerName || got.Host != want.Host || got.TLSServerName != want.TLSServerName || !slices.Equal(got.Addrs, want.Addrs) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}
