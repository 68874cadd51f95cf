package receiver

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// Options configures a Receiver.
type Options struct {
	// Origin is the sending server's name (fedsender's server_name).
	Origin string
	// OriginKey is the public half of the sender's signing key.
	OriginKey ed25519.PublicKey
	// OriginKeyID is the key's id, e.g. "ed25519:a_abcd".
	OriginKeyID string
	// Cert is the server certificate, e.g. from pki's ca.Leaf("127.0.0.1").
	Cert tls.Certificate
	// BadCert is served instead of Cert after UseBadCert(true). When empty, a
	// self-signed certificate for 127.0.0.1 and localhost is used, which no
	// test CA trusts.
	BadCert tls.Certificate
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// ServerName is the destination name fedsender is told to use and that
	// requests must be signed for; default the listen address "127.0.0.1:PORT".
	ServerName string
	// ExpectHost, when set, is the Host header every request must carry; a
	// different one is a violation (the request is still served, as Synapse
	// does not check it).
	ExpectHost string
	// OnPDU, when set, is called for every PDU of every newly accepted
	// transaction, after it is recorded (benchmarks measure latency with it).
	// It runs on the request's goroutine before the answer is written.
	OnPDU func(eventID, roomID string, at time.Time)
	// OnEDU, when set, is called for every well-formed EDU of every newly
	// accepted transaction, after OnPDU (benchmarks measure EDU latency
	// with it). It runs on the request's goroutine before the answer is
	// written.
	OnEDU func(EDU)
	// DiscardEDUs keeps no EDU for EDUs() (OnEDU still sees them and
	// Transactions still counts them): for benchmarks that send millions.
	DiscardEDUs bool
	// OnTransaction, when set, is called for every newly accepted
	// transaction with its well-formed PDUs, after OnPDU; it runs on the
	// request's goroutine before the answer is written.
	OnTransaction func(Transaction, []PDU)
	// KeepBodies keeps the raw body of every accepted transaction, for
	// Transactions. Off by default: only a hash of each body is kept.
	KeepBodies bool
	// KeepHeaders keeps the headers of every PUT /send request, faulted
	// and refused ones included, for RequestHeaders (tests check that no
	// trace context leaks to remote servers). Off by default.
	KeepHeaders bool
	// SkipSignatureCheck parses the Authorization header and checks its
	// origin, destination and key id but does not verify the ed25519
	// signature. For benchmarks whose receivers share the CPU with the
	// sender being measured; tests leave it off.
	SkipSignatureCheck bool
	// Peer, when set, names the sender of each connection from its remote
	// address ("127.0.0.1:PORT"), e.g. the process that holds the client
	// socket, so that tests can tell several senders of one origin apart.
	// It is called once per connection, as it is accepted (the client's
	// socket is open then); the name is recorded with every request
	// (SendRequests) and accepted transaction (Transaction.Peer).
	Peer func(remoteAddr string) string
	// RoomVersion, when set (e.g. "10"), is the room version of PDUs that
	// carry no event_id, as Synapse sends them in room versions 3 and
	// later: their event id is the reference hash under that version's
	// redaction rules. A PDU with an event_id is read as before.
	RoomVersion string
	// Fallback, when set, serves requests for every path other than
	// /_matrix/federation/v1/send/ (e.g. /.well-known/matrix/server), which
	// are then not violations.
	Fallback http.Handler
	// Logger receives violations and server errors; nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the options at once.
func (o *Options) Validate() error {
	var errs []error
	if o.Origin == "" {
		errs = append(errs, errors.New("missing Origin"))
	}
	if len(o.OriginKey) != ed25519.PublicKeySize {
		errs = append(errs, fmt.Errorf("want a %d-byte OriginKey, got %d bytes", ed25519.PublicKeySize, len(o.OriginKey)))
	}
	if v, ok := strings.CutPrefix(o.OriginKeyID, "ed25519:"); !ok || v == "" {
		errs = append(errs, fmt.Errorf("want OriginKeyID \"ed25519:<version>\", got %q", o.OriginKeyID))
	}
	if len(o.Cert.Certificate) == 0 {
		errs = append(errs, errors.New("missing Cert"))
	}
	if o.RoomVersion != "" {
		if _, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(o.RoomVersion)); err != nil {
			errs = append(errs, fmt.Errorf("RoomVersion: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("receiver: invalid options: %w", err)
	}
	return nil
}
