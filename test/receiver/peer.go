package receiver

import (
	"context"
	"net"
	"time"
)

// SendRequest is one PUT /send request as it arrived, with the sender that
// made it (Options.Peer).
type SendRequest struct {
	TxnID string
	Peer  string
	At    time.Time
}

type peerKey struct{}

// connPeer names the sender of a newly accepted connection for the
// requests it carries.
func (r *Receiver) connPeer(ctx context.Context, c net.Conn) context.Context {
	if r.opts.Peer == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, r.opts.Peer(c.RemoteAddr().String()))
}

func peerOf(ctx context.Context) string {
	p, _ := ctx.Value(peerKey{}).(string)
	return p
}

// keepRequest records a PUT /send request with its sender, when
// Options.Peer is set.
func (r *Receiver) keepRequest(ctx context.Context, txnID string) {
	if r.opts.Peer == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sendReqs = append(r.sendReqs, SendRequest{TxnID: txnID, Peer: peerOf(ctx), At: time.Now()})
}

// SendRequests returns every PUT /send request seen, faulted, refused and
// retried ones included, in arrival order, with the sender Options.Peer
// named; nil unless Options.Peer is set.
func (r *Receiver) SendRequests() []SendRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]SendRequest(nil), r.sendReqs...)
}
