package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Sentinel errors wrapped by SendError.Err (or returned by New).
var (
	// ErrStatus is wrapped when the destination answered with a non-2xx status.
	ErrStatus = errors.New("federation: unsuccessful HTTP status")
	// ErrInvalidTxnID is wrapped for a transaction id outside [0-9A-Za-z_-].
	ErrInvalidTxnID = errors.New("federation: invalid transaction id")
	// ErrClosed is wrapped for sends after Close.
	ErrClosed = errors.New("federation: client closed")
	// ErrGateClosed: the request was not sent, its gate (WithGate) was
	// closed: the replica no longer holds the partition's lease.
	ErrGateClosed = errors.New("federation: not sent: the gate is closed")
	// ErrInvalidOptions is wrapped by New's errors.
	ErrInvalidOptions = errors.New("federation: invalid options")
)

// Class is what kind of failure a SendError is, which decides how the caller
// retries and backs off.
type Class int

// The failure classes.
const (
	// ClassNetwork: connection refused or reset, DNS or resolution failure,
	// an address denied by the Guard, the caller's context cancelled.
	ClassNetwork Class = iota + 1
	// ClassTimeout: the attempt ran out of time (RequestTimeout, a dial
	// timeout, or the caller's deadline).
	ClassTimeout
	// ClassTLS: the TLS handshake failed, usually because the certificate
	// is not valid for the destination.
	ClassTLS
	// ClassRateLimited: HTTP 429. RetryAfter says when to try again, if the
	// destination said so.
	ClassRateLimited
	// ClassServer: HTTP 5xx.
	ClassServer
	// ClassUnauthorized: HTTP 401 or 403; our signature or key is not
	// accepted, or the destination denies us.
	ClassUnauthorized
	// ClassRejected: any other non-2xx status, and requests that can never
	// succeed (an invalid destination name or transaction id).
	ClassRejected
)

// String names the class, for logs and metrics labels.
func (c Class) String() string {
	switch c {
	case ClassNetwork:
		return "network"
	case ClassTimeout:
		return "timeout"
	case ClassTLS:
		return "tls"
	case ClassRateLimited:
		return "rate_limited"
	case ClassServer:
		return "server"
	case ClassUnauthorized:
		return "unauthorized"
	case ClassRejected:
		return "rejected"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// SendError is the only error type SendTransaction returns. Classify it with
// errors.As; errors.Is reaches the cause in Err (netguard.ErrDenied,
// context.DeadlineExceeded, ErrStatus, servername.ErrInvalid, ...).
type SendError struct {
	Destination string
	Class       Class
	Status      int           // HTTP status, 0 if none
	RetryAfter  time.Duration // from Retry-After (seconds or HTTP date), else body retry_after_ms, on 429 and 503; 0 if none
	Errcode     string        // Matrix error body if any
	Message     string
	Err         error
}

// Error describes the failure in one line.
func (e *SendError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "federation: send to %s: %s", e.Destination, e.Class)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Errcode != "" {
		fmt.Fprintf(&b, " %s", e.Errcode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, " %q", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %v)", e.RetryAfter)
	}
	if e.Err != nil && e.Status == 0 {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *SendError) Unwrap() error { return e.Err }

// tlsError marks a failed TLS handshake, so that classification does not
// depend on which of crypto/tls's many error types (several unexported)
// described it.
type tlsError struct {
	addr, serverName string
	err              error
}

func (e *tlsError) Error() string {
	return fmt.Sprintf("TLS handshake with %s as %q: %v", e.addr, e.serverName, e.err)
}

func (e *tlsError) Unwrap() error { return e.err }

// isTLS reports a TLS failure: a handshake our dialer marked, or one of
// crypto/tls's and crypto/x509's exported error types.
func isTLS(err error) bool {
	var (
		marked    *tlsError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &marked) || errors.As(err, &verify) || errors.As(err, &record) ||
		errors.As(err, &authority) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
