package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

// Defaults of Options.
const (
	DefaultRequestTimeout = 60 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxIdleConns   = 1024
	DefaultUserAgent      = "fedsender"
)

// Pool settings: transactions to one destination are sent one at a time, so
// a couple of idle connections per destination is plenty.
const (
	maxIdleConnsPerHost = 2
	idleConnTimeout     = 90 * time.Second
	maxResponseHeaders  = 64 << 10
	maxResponseBody     = 1 << 20
)

// Options configure a Client.
type Options struct {
	Origin             string             // our server name
	Key                xmatrix.SigningKey // signs every request
	Resolver           *resolve.Resolver  // required
	Guard              *netguard.Guard    // nil = netguard.DefaultDenylist() with no allowlist
	RootCAs            *x509.CertPool     // nil = system roots
	InsecureSkipVerify bool               // operators' escape hatch; never in production
	RequestTimeout     time.Duration      // per attempt, resolution and dialing included; 0 = 60 s

	// DialTimeout bounds connecting to one candidate address, TLS handshake
	// included, so one black-holed address leaves time for the next.
	// 0 = 10 s.
	DialTimeout time.Duration
	// MaxIdleConns bounds idle keep-alive connections across all
	// destinations (each holds a file descriptor). 0 = 1024.
	MaxIdleConns int
	// UserAgent is sent as User-Agent. "" = "fedsender".
	UserAgent string
	// TracerProvider, when tracing is on, gives every request a client
	// span (otelhttp) under the caller's span. Trace headers are never
	// sent to remote servers. nil or no-op: requests are not instrumented.
	TracerProvider trace.TracerProvider
}

func (o *Options) setDefaults() {
	if o.Guard == nil {
		o.Guard = netguard.New(netguard.DefaultDenylist(), nil)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = DefaultMaxIdleConns
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
}

// Validate reports every problem with the options at once.
func (o *Options) Validate() error {
	var errs []error
	if err := servername.Validate(o.Origin); err != nil {
		errs = append(errs, fmt.Errorf("%w: Origin: %w", ErrInvalidOptions, err))
	}
	if o.Key.Version == "" || len(o.Key.Private) != ed25519.PrivateKeySize {
		errs = append(errs, fmt.Errorf("%w: Key: need a version and a %d-byte ed25519 private key", ErrInvalidOptions, ed25519.PrivateKeySize))
	}
	if o.Resolver == nil {
		errs = append(errs, fmt.Errorf("%w: Resolver is nil", ErrInvalidOptions))
	}
	return errors.Join(errs...)
}

// Client sends transactions to destinations. It is safe for concurrent use.
type Client struct {
	opts      Options
	transport *http.Transport
	rt        http.RoundTripper // transport, instrumented when tracing is on
	dialer    *net.Dialer
	tlsConfig *tls.Config // cloned per connection with the destination's ServerName
	closed    atomic.Bool
}

// New returns a Client.
func New(opts Options) (*Client, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		opts: opts,
		// The dialer only ever sees "ip:port" candidates; Control checks the
		// address actually connected.
		dialer: &net.Dialer{Control: opts.Guard.Control},
		tlsConfig: &tls.Config{
			RootCAs:            opts.RootCAs,
			InsecureSkipVerify: opts.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{"http/1.1"},
			ClientSessionCache: tls.NewLRUClientSessionCache(opts.MaxIdleConns),
		},
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	c.transport = &http.Transport{
		Proxy:                  nil, // a proxy would make the Guard check the proxy's address
		DialContext:            refusePlaintext,
		DialTLSContext:         c.dialTLS,
		Protocols:              &protocols,
		MaxIdleConns:           opts.MaxIdleConns,
		MaxIdleConnsPerHost:    maxIdleConnsPerHost,
		IdleConnTimeout:        idleConnTimeout,
		MaxResponseHeaderBytes: maxResponseHeaders,
		DisableCompression:     true, // no Accept-Encoding: send only what Matrix needs
	}
	c.rt = instrument(c.transport, opts.TracerProvider)
	return c, nil
}

// Close drops idle connections; sends after Close fail with ErrClosed.
func (c *Client) Close() {
	c.closed.Store(true)
	c.transport.CloseIdleConnections()
}

// poolSuffix ends the synthetic URL hosts that key the connection pool.
const poolSuffix = ".fedsender.invalid"

// poolHost encodes a destination as a URL host, so that the transport keeps
// one connection pool per destination and dialTLS knows whom to resolve.
// Hex keeps any server name (IPv6 literal and port included) a valid host.
func poolHost(destination string) string {
	return hex.EncodeToString([]byte(destination)) + poolSuffix
}

func destinationOf(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("federation: dial address %q: %w", addr, err)
	}
	encoded, ok := strings.CutSuffix(host, poolSuffix)
	if !ok {
		return "", fmt.Errorf("federation: dial address %q is not a destination", addr)
	}
	dest, err := hex.DecodeString(encoded)
	if err != nil {
		return "", fmt.Errorf("federation: dial address %q: %w", addr, err)
	}
	return string(dest), nil
}

// dialTLS is the transport's DialTLSContext: it resolves the destination
// encoded in addr and returns a verified TLS connection to the first
// candidate address that accepts one.
func (c *Client) dialTLS(ctx context.Context, _, addr string) (net.Conn, error) {
	// The transport detaches dials from the request's cancellation (a late
	// connection still serves the next request), so bound the dial here.
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	dest, err := destinationOf(addr)
	if err != nil {
		return nil, err
	}
	target, err := c.opts.Resolver.Resolve(ctx, dest)
	if err != nil {
		return nil, err
	}
	if len(target.Addrs) == 0 {
		return nil, fmt.Errorf("federation: %s: %w", dest, resolve.ErrNoAddresses)
	}
	var errs []error
	for _, candidate := range target.Addrs {
		conn, err := c.dialOne(ctx, candidate, target.TLSServerName)
		if err == nil {
			annotateDial(ctx, candidate)
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (c *Client) dialOne(ctx context.Context, addr, serverName string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	raw, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := c.tlsConfig.Clone()
	cfg.ServerName = serverName
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		if isTimeout(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return nil, &tlsError{addr: addr, serverName: serverName, err: err}
	}
	return conn, nil
}

func refusePlaintext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("federation: plain-text HTTP is not allowed")
}
