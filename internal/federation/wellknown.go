package federation

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"time"

	"github.com/fedsender/fedsender/internal/netguard"
)

// WellKnownClientOptions configure NewWellKnownClient.
type WellKnownClientOptions struct {
	Guard              *netguard.Guard // nil = netguard.DefaultDenylist() with no allowlist
	RootCAs            *x509.CertPool  // nil = system roots
	InsecureSkipVerify bool
	Timeout            time.Duration // whole fetch, redirects included; 0 = 10 s
	Resolver           *net.Resolver // DNS for the .well-known hosts; nil = net.DefaultResolver
}

// NewWellKnownClient returns the HTTP client for resolve.Options.HTTPClient:
// every connection it makes, redirects included, goes through the Guard, and
// it never uses an HTTP proxy (the Guard would then check the proxy instead
// of the destination).
func NewWellKnownClient(o WellKnownClientOptions) *http.Client {
	if o.Guard == nil {
		o.Guard = netguard.New(netguard.DefaultDenylist(), nil)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	dialer := &net.Dialer{Timeout: o.Timeout, Resolver: o.Resolver, Control: o.Guard.Control}
	return &http.Client{
		Timeout: o.Timeout,
		Transport: &http.Transport{
			Proxy:       nil,
			DialContext: dialer.DialContext,
			TLSClientConfig: &tls.Config{
				RootCAs:            o.RootCAs,
				InsecureSkipVerify: o.InsecureSkipVerify,
				MinVersion:         tls.VersionTLS12,
			},
			TLSHandshakeTimeout:    o.Timeout,
			MaxIdleConnsPerHost:    1,
			IdleConnTimeout:        30 * time.Second,
			MaxResponseHeaderBytes: maxResponseHeaders,
			DisableCompression:     true,
		},
	}
}
