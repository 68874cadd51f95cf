package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/internal/telemetry"
)

// Target is where and how to reach a destination.
type Target struct {
	ServerName    string   // the destination as given
	Host          string   // value for the HTTP Host header
	TLSServerName string   // name the certificate must match (SNI)
	Addrs         []string // "ip:port" candidates to try in order (all A/AAAA of all SRV targets)
}

func (t Target) clone() Target {
	t.Addrs = slices.Clone(t.Addrs)
	return t
}

// Defaults of Options.
const (
	DefaultPort              = 8448
	DefaultDNSCacheTTL       = 5 * time.Minute
	DefaultWellKnownErrorTTL = 10 * time.Minute
	DefaultWellKnownTimeout  = 10 * time.Second
	DefaultLookupTimeout     = 30 * time.Second
	DefaultMaxCacheEntries   = 100_000
)

// Options configure a Resolver. Zero values select the defaults.
type Options struct {
	Resolver      *net.Resolver // DNS; nil = net.DefaultResolver. Tests point it at a local DNS server.
	HTTPClient    *http.Client  // for .well-known; nil = a client with system roots and netguard's default denylist
	WellKnownPort int           // 0 = 443 (tests set the port of their local server)
	DefaultPort   int           // 0 = 8448
	Now           func() time.Time

	// DNSCacheTTL is how long a resolved Target is reused (never longer than
	// the .well-known answer it came from). 0 = 5 min.
	DNSCacheTTL time.Duration
	// WellKnownErrorTTL is how long a failed .well-known fetch is remembered
	// as "no delegation". 0 = 10 min; values above 1 h (the specification's
	// cap) are lowered to 1 h.
	WellKnownErrorTTL time.Duration
	// WellKnownTimeout bounds one .well-known fetch, redirects included.
	// 0 = 10 s.
	WellKnownTimeout time.Duration
	// LookupTimeout bounds one whole resolution, which is shared by all
	// concurrent callers for the name. 0 = 30 s.
	LookupTimeout time.Duration
	// MaxCacheEntries bounds each of the two caches (.well-known answers
	// and Targets). 0 = 100,000.
	MaxCacheEntries int
	// Logger receives debug records about .well-known failures. nil =
	// slog.Default().
	Logger *slog.Logger
	// Tracer records a span per resolution (zero: tracing off).
	Tracer telemetry.Tracer
	// Metrics counts failed lookups (nil: none).
	Metrics *telemetry.Metrics
}

func (o *Options) setDefaults() {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient(o.Resolver)
	}
	if o.WellKnownPort == 0 {
		o.WellKnownPort = 443
	}
	if o.DefaultPort == 0 {
		o.DefaultPort = DefaultPort
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DNSCacheTTL <= 0 {
		o.DNSCacheTTL = DefaultDNSCacheTTL
	}
	if o.WellKnownErrorTTL <= 0 {
		o.WellKnownErrorTTL = DefaultWellKnownErrorTTL
	}
	o.WellKnownErrorTTL = min(o.WellKnownErrorTTL, wellKnownMaxErrorTTL)
	if o.WellKnownTimeout <= 0 {
		o.WellKnownTimeout = DefaultWellKnownTimeout
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	if o.MaxCacheEntries <= 0 {
		o.MaxCacheEntries = DefaultMaxCacheEntries
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// staleTargetGrace is how long after its expiry a cached Target is still
// returned when a fresh resolution fails for a reason other than the name
// not existing (a DNS server failing or timing out), as Synapse does for SRV.
const staleTargetGrace = time.Hour

// maxCandidates bounds Target.Addrs: a hostile SRV record set must not make
// one connection attempt dial hundreds of addresses.
const maxCandidates = 32

// Resolver resolves Matrix server names. It is safe for concurrent use.
type Resolver struct {
	opts      Options
	http      *http.Client
	targets   *lru[targetEntry]
	wellKnown *lru[wellKnownEntry]
	flights   flight
}

type targetEntry struct {
	target  Target
	expires time.Time
}

// New returns a Resolver.
func New(opts Options) *Resolver {
	opts.setDefaults()
	hc := *opts.HTTPClient // a copy, so that the redirect policy is ours
	hc.CheckRedirect = checkRedirect
	return &Resolver{
		opts:      opts,
		http:      &hc,
		targets:   newLRU[targetEntry](opts.MaxCacheEntries),
		wellKnown: newLRU[wellKnownEntry](opts.MaxCacheEntries),
	}
}

// Resolve returns where and how to connect to serverName. Errors wrap
// servername.ErrInvalid for a malformed name, ErrNoAddresses or
// ErrServiceUnavailable when DNS says there is nothing to connect to, the
// DNS error itself for other failures, or ctx's error.
func (r *Resolver) Resolve(ctx context.Context, serverName string) (Target, error) {
	if !r.opts.Tracer.Enabled() {
		t, _, err := r.resolve(ctx, serverName)
		return t, err
	}
	ctx, span := r.opts.Tracer.Start(ctx, telemetry.SpanResolve,
		trace.WithAttributes(telemetry.KeyDestination.String(serverName)))
	defer span.End()
	t, cache, err := r.resolve(ctx, serverName)
	span.SetAttributes(telemetry.KeyResolveCache.String(cache))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return t, err
	}
	span.SetAttributes(telemetry.KeyServerAddress.String(t.Host), telemetry.KeyResolveAddresses.StringSlice(t.Addrs))
	return t, nil
}

// resolve is Resolve; cache says how the answer was found: ip_literal,
// hit (the Target cache), or miss (a lookup, possibly shared with
// concurrent callers).
func (r *Resolver) resolve(ctx context.Context, serverName string) (t Target, cache string, err error) {
	host, port, err := servername.Split(serverName)
	if err != nil {
		return Target{}, "", err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return r.ipTarget(serverName, serverName, ip, port), "ip_literal", nil
	}
	if e, ok := r.targets.get(serverName); ok && r.opts.Now().Before(e.expires) {
		return e.target.clone(), "hit", nil
	}
	// The lookup outlives this caller if it gives up (others may share it),
	// so it gets its own deadline instead of ctx's cancellation.
	lookupCtx := context.WithoutCancel(ctx)
	c := r.flights.join(serverName, func() (Target, error) {
		ctx, cancel := context.WithTimeout(lookupCtx, r.opts.LookupTimeout)
		defer cancel()
		return r.lookupAndCache(ctx, serverName, host, port)
	})
	select {
	case <-c.done:
		if c.err != nil {
			return Target{}, "miss", c.err
		}
		return c.target.clone(), "miss", nil
	case <-ctx.Done():
		return Target{}, "miss", fmt.Errorf("resolve %s: %w", serverName, context.Cause(ctx))
	}
}

func (r *Resolver) lookupAndCache(ctx context.Context, serverName, host string, port int) (Target, error) {
	t, expires, err := r.lookup(ctx, serverName, host, port)
	now := r.opts.Now()
	if err != nil {
		stale, ok := r.targets.get(serverName)
		if ok && !authoritativeMiss(err) && now.Before(stale.expires.Add(staleTargetGrace)) {
			r.opts.Logger.DebugContext(ctx, "resolve: using stale result", "destination", serverName, "err", err)
			return stale.target, nil
		}
		r.opts.Metrics.ResolveFailure(ctx)
		return Target{}, fmt.Errorf("resolve %s: %w", serverName, err)
	}
	r.targets.put(serverName, targetEntry{target: t, expires: expires})
	return t, nil
}

// lookup runs the specification's algorithm for a hostname (IP literals are
// handled by Resolve) and returns the Target and when it stops being valid.
func (r *Resolver) lookup(ctx context.Context, serverName, host string, port int) (Target, time.Time, error) {
	dnsExpiry := r.opts.Now().Add(r.opts.DNSCacheTTL)
	if port != 0 {
		// Step 2: explicit port.
		t, err := r.hostTarget(ctx, serverName, serverName, host, port)
		return t, dnsExpiry, err
	}
	// Step 3: .well-known delegation.
	delegated, wkExpiry := r.delegation(ctx, host)
	expiry := minTime(dnsExpiry, wkExpiry)
	if delegated == "" {
		// Steps 4 to 6: SRV records and port 8448 of the name itself.
		t, err := r.srvOrDefault(ctx, serverName, host)
		return t, expiry, err
	}
	dhost, dport, err := servername.Split(delegated)
	if err != nil { // checked when the .well-known was parsed
		return Target{}, expiry, err
	}
	if ip, err := netip.ParseAddr(dhost); err == nil {
		return r.ipTarget(serverName, delegated, ip, dport), wkExpiry, nil // 3.1
	}
	if dport != 0 {
		t, err := r.hostTarget(ctx, serverName, delegated, dhost, dport) // 3.2
		return t, expiry, err
	}
	t, err := r.srvOrDefault(ctx, serverName, dhost) // 3.3 to 3.5
	return t, expiry, err
}

// ipTarget is steps 1 and 3.1: connect to the literal, Host is the name
// including any port, and the certificate must be valid for the IP.
func (r *Resolver) ipTarget(serverName, hostHeader string, ip netip.Addr, port int) Target {
	if port == 0 {
		port = r.opts.DefaultPort
	}
	ip = ip.Unmap()
	return Target{
		ServerName:    serverName,
		Host:          hostHeader,
		TLSServerName: ip.String(),
		Addrs:         []string{netip.AddrPortFrom(ip, uint16(port)).String()},
	}
}

// hostTarget is steps 2 and 3.2: a hostname with an explicit port.
func (r *Resolver) hostTarget(ctx context.Context, serverName, hostHeader, host string, port int) (Target, error) {
	addrs, err := r.lookupAddrs(ctx, host, uint16(port), nil)
	if err != nil {
		return Target{}, err
	}
	return Target{ServerName: serverName, Host: hostHeader, TLSServerName: host, Addrs: addrs}, nil
}

// srvOrDefault is steps 3.3 to 3.5 and 4 to 6: SRV _matrix-fed._tcp, then the
// deprecated _matrix._tcp, then port 8448. Host and certificate name are the
// hostname in every case.
func (r *Resolver) srvOrDefault(ctx context.Context, serverName, host string) (Target, error) {
	t := Target{ServerName: serverName, Host: host, TLSServerName: host}
	for _, service := range []string{"matrix-fed", "matrix"} {
		addrs, found, err := r.lookupSRV(ctx, service, host)
		if err != nil {
			return Target{}, err
		}
		if found {
			t.Addrs = addrs
			return t, nil
		}
	}
	addrs, err := r.lookupAddrs(ctx, host, uint16(r.opts.DefaultPort), nil)
	if err != nil {
		return Target{}, err
	}
	t.Addrs = addrs
	return t, nil
}

// lookupSRV returns the addresses of every target of _service._tcp.host, in
// the order net.Resolver.LookupSRV gives them: by priority, then shuffled by
// weight as RFC 2782 describes. found is false when there are no records.
func (r *Resolver) lookupSRV(ctx context.Context, service, host string) (addrs []string, found bool, err error) {
	_, srvs, err := r.opts.Resolver.LookupSRV(ctx, service, "tcp", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, false, nil
		}
		if len(srvs) == 0 { // otherwise some records were malformed: use the rest
			return nil, false, fmt.Errorf("SRV _%s._tcp.%s: %w", service, host, err)
		}
	}
	if len(srvs) == 0 {
		return nil, false, nil
	}
	if len(srvs) == 1 && srvs[0].Target == "." {
		return nil, true, fmt.Errorf("SRV _%s._tcp.%s: %w", service, host, ErrServiceUnavailable)
	}
	var errs []error
	for _, srv := range srvs {
		if srv.Target == "." || srv.Port == 0 {
			continue
		}
		if addrs, err = r.lookupAddrs(ctx, srv.Target, srv.Port, addrs); err != nil {
			errs = append(errs, err)
		}
		if len(addrs) >= maxCandidates {
			break
		}
	}
	if len(addrs) == 0 {
		errs = append(errs, fmt.Errorf("SRV _%s._tcp.%s: no target has an address: %w", service, host, ErrNoAddresses))
		return nil, true, errors.Join(errs...)
	}
	return addrs, true, nil
}

// lookupAddrs appends host's A and AAAA records with port to addrs, skipping
// duplicates and stopping at maxCandidates.
func (r *Resolver) lookupAddrs(ctx context.Context, host string, port uint16, addrs []string) ([]string, error) {
	ips, err := r.opts.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return addrs, fmt.Errorf("%s: %w: %w", host, ErrNoAddresses, err)
		}
		return addrs, fmt.Errorf("%s: %w", host, err)
	}
	if len(ips) == 0 {
		return addrs, fmt.Errorf("%s: %w", strings.TrimSuffix(host, "."), ErrNoAddresses)
	}
	for _, ip := range ips {
		a := netip.AddrPortFrom(ip.Unmap(), port).String()
		if len(addrs) < maxCandidates && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// authoritativeMiss reports whether DNS said there is nothing to connect to,
// as opposed to failing to answer.
func authoritativeMiss(err error) bool {
	return errors.Is(err, ErrNoAddresses) || errors.Is(err, ErrServiceUnavailable)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
