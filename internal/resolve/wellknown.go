package resolve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/servername"
)

// .well-known/matrix/server limits, as in the specification and Synapse.
const (
	wellKnownDefaultTTL  = 24 * time.Hour
	wellKnownJitter      = 0.1 // up to 10 % added to the default, to spread refreshes
	wellKnownMinTTL      = 5 * time.Minute
	wellKnownMaxTTL      = 48 * time.Hour
	wellKnownMaxErrorTTL = time.Hour
	wellKnownMaxBody     = 50 * 1024
	wellKnownMaxRedirect = 10
	// wellKnownRememberValid is how long past its expiry a valid delegation
	// is kept while refreshing it fails, so a destination's brief outage
	// does not send its traffic to the wrong host (Synapse does the same).
	wellKnownRememberValid = 2 * time.Hour
)

type wellKnownEntry struct {
	server       string    // the delegated server name, "" for none
	expires      time.Time // when to fetch again
	keepValidTil time.Time // a valid server may be reused on failure until then
}

// delegation returns the server name host delegates to ("" for none) and
// until when that answer holds, fetching .well-known/matrix/server unless a
// cached answer is fresh. A failed fetch is an answer too: no delegation.
func (r *Resolver) delegation(ctx context.Context, host string) (string, time.Time) {
	key := strings.ToLower(host)
	prev, cached := r.wellKnown.get(key)
	if cached && r.opts.Now().Before(prev.expires) {
		return prev.server, prev.expires
	}
	server, ttl, err := r.fetchWellKnown(ctx, host)
	now := r.opts.Now()
	var e wellKnownEntry
	switch {
	case err == nil:
		expires := now.Add(ttl)
		e = wellKnownEntry{server: server, expires: expires, keepValidTil: expires.Add(wellKnownRememberValid)}
	case cached && prev.server != "" && now.Before(prev.keepValidTil):
		r.opts.Logger.DebugContext(ctx, "resolve: .well-known refresh failed, keeping the previous delegation",
			"destination", host, "m.server", prev.server, "err", err)
		e = wellKnownEntry{server: prev.server, expires: now.Add(r.opts.WellKnownErrorTTL), keepValidTil: prev.keepValidTil}
	default:
		r.opts.Logger.DebugContext(ctx, "resolve: no .well-known delegation", "destination", host, "err", err)
		e = wellKnownEntry{expires: now.Add(r.opts.WellKnownErrorTTL)}
	}
	r.wellKnown.put(key, e)
	return e.server, e.expires
}

// fetchWellKnown GETs https://host/.well-known/matrix/server and returns its
// m.server and how long to cache it.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.WellKnownTimeout)
	defer cancel()
	authority := host
	if r.opts.WellKnownPort != 443 {
		authority = net.JoinHostPort(host, strconv.Itoa(r.opts.WellKnownPort))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+authority+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", errWellKnown, err)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", errWellKnown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%w: HTTP status %d", errWellKnown, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBody+1))
	if err != nil {
		return "", 0, fmt.Errorf("%w: reading body: %w", errWellKnown, err)
	}
	if len(body) > wellKnownMaxBody {
		return "", 0, fmt.Errorf("%w: body larger than %d bytes", errWellKnown, wellKnownMaxBody)
	}
	server, err := parseWellKnown(body)
	if err != nil {
		return "", 0, err
	}
	return server, cacheTTL(resp.Header, r.opts.Now()), nil
}

func parseWellKnown(body []byte) (string, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("%w: body is not a JSON object: %w", errWellKnown, err)
	}
	raw, ok := doc["m.server"]
	if !ok {
		return "", fmt.Errorf("%w: no m.server", errWellKnown)
	}
	var server string
	if err := json.Unmarshal(raw, &server); err != nil {
		return "", fmt.Errorf("%w: m.server is not a string", errWellKnown)
	}
	if err := servername.Validate(server); err != nil {
		return "", fmt.Errorf("%w: m.server: %w", errWellKnown, err)
	}
	return server, nil
}

// cacheTTL reads Cache-Control max-age (or no-store/no-cache), then Expires,
// and clamps the result to [5 min, 48 h]; without either header it is 24 h
// plus jitter.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl, ok := cacheControlTTL(h)
	if !ok {
		if expires := h.Get("Expires"); expires != "" {
			ok = true
			if t, err := http.ParseTime(expires); err == nil {
				ttl = t.Sub(now)
			} // an invalid Expires means "already expired" (RFC 9111 5.3)
		}
	}
	if !ok {
		ttl = wellKnownDefaultTTL + time.Duration(rand.Float64()*wellKnownJitter*float64(wellKnownDefaultTTL))
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}

func cacheControlTTL(h http.Header) (time.Duration, bool) {
	for _, value := range h.Values("Cache-Control") {
		for _, directive := range strings.Split(value, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(directive), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				secs, err := strconv.ParseInt(strings.Trim(arg, `"`), 10, 64)
				if err != nil || secs < 0 {
					continue
				}
				return time.Duration(min(secs, int64(wellKnownMaxTTL/time.Second))) * time.Second, true
			}
		}
	}
	return 0, false
}

// checkRedirect follows at most 10 redirects and only to https URLs: TLS is
// mandatory for federation, and a plain-text hop would let anyone on the
// path choose the delegation.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > wellKnownMaxRedirect {
		return fmt.Errorf("%w: more than %d redirects", errWellKnown, wellKnownMaxRedirect)
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("%w: redirect to non-https URL %s", errWellKnown, req.URL.Redacted())
	}
	return nil
}

// defaultHTTPClient is the .well-known client used when Options.HTTPClient is
// nil: system roots, and netguard's default denylist on every dial.
func defaultHTTPClient(resolver *net.Resolver) *http.Client {
	dialer := &net.Dialer{
		Timeout:  DefaultWellKnownTimeout,
		Resolver: resolver,
		Control:  netguard.New(netguard.DefaultDenylist(), nil).Control,
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // a proxy would make the guard check the proxy's address
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: DefaultWellKnownTimeout,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}}
}
