package federation_test

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/fedsender/fedsender/internal/federation"
	"github.com/fedsender/fedsender/internal/netguard"
	"github.com/fedsender/fedsender/internal/resolve"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

// Wiring the client as main does: one Guard for both the .well-known fetches
// and the federation connections, and a caller that turns the error class
// into a retry decision.
func Example() {
	key, err := xmatrix.GenerateKey("a_1")
	if err != nil {
		panic(err)
	}
	guard := netguard.New(netguard.DefaultDenylist(), nil)
	resolver := resolve.New(resolve.Options{
		HTTPClient: federation.NewWellKnownClient(federation.WellKnownClientOptions{Guard: guard}),
	})
	client, err := federation.New(federation.Options{
		Origin:   "example.org",
		Key:      key,
		Resolver: resolver,
		Guard:    guard,
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	body := []byte(`{"origin":"example.org","origin_server_ts":1,"pdus":[]}`)
	res, err := client.SendTransaction(context.Background(), "matrix.org", "1700000000000_1", body, body)
	var sendErr *federation.SendError
	switch {
	case err == nil:
		for id, reason := range res.PDUErrors {
			slog.Warn("PDU rejected", "destination", "matrix.org", "event_id", id, "error", reason)
		}
	case errors.As(err, &sendErr) && sendErr.Class == federation.ClassRateLimited:
		wait := max(sendErr.RetryAfter, 5*time.Second)
		slog.Info("rate limited", "destination", sendErr.Destination, "retry_in", wait)
	case errors.As(err, &sendErr) && sendErr.Class == federation.ClassUnauthorized:
		slog.Error("destination refuses our signature", "destination", sendErr.Destination, "err", err)
	default:
		slog.Info("send failed; back off", "err", err)
	}
}
