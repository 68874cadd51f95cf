package receiver

import (
	"net/http"
	"time"
)

// flight is the transaction being processed. Synapse processes one
// transaction per origin at a time and makes a retry of the same txnId wait
// for the first one's answer (its ResponseCache); flight does both.
type flight struct {
	txnID    string
	bodyHash uint64
	done     chan struct{} // closed when resp and ok are set
	resp     response
	ok       bool // false: cut off, the joined requests are cut off too
}

// process runs a checked transaction through the concurrency check, the
// fault and the txnId cache. ok is false when the request must be cut off.
func (r *Receiver) process(g *generation, in *incoming) (resp response, ok bool) {
	r.mu.Lock()
	if f := r.flight; f != nil {
		if f.txnID != in.txnID {
			r.violateLocked("txn %s sent while txn %s is still in flight: one transaction at a time per destination", in.txnID, f.txnID)
			r.mu.Unlock()
			return errorResponse(http.StatusTooManyRequests, "M_UNKNOWN", "Too many concurrent transactions"), true
		}
		if f.bodyHash != in.bodyHash {
			r.violateLocked("txn %s sent again with a different body while the first is in flight", in.txnID)
		}
		r.mu.Unlock()
		return r.join(g, f)
	}
	f := &flight{txnID: in.txnID, bodyHash: in.bodyHash, done: make(chan struct{})}
	r.flight = f
	fault := r.fault.take()
	released := r.fault.changed
	r.bumpLocked()
	r.mu.Unlock()

	resp, ok = r.run(g, in, fault, released)

	r.mu.Lock()
	r.flight = nil
	f.resp, f.ok = resp, ok
	close(f.done)
	r.bumpLocked()
	r.mu.Unlock()
	return resp, ok
}

// join waits for the identical request in flight and answers the same.
func (r *Receiver) join(g *generation, f *flight) (response, bool) {
	select {
	case <-f.done:
	case <-g.down:
		return response{}, false
	}
	if !f.ok {
		return response{}, false
	}
	r.mu.Lock()
	r.dups++
	r.bumpLocked()
	r.mu.Unlock()
	return f.resp, true
}

func (r *Receiver) run(g *generation, in *incoming, fault Fault, released <-chan struct{}) (response, bool) {
	if fault.Hang {
		select {
		case <-released:
			fault = Fault{} // then processed normally, as by a slow server
		case <-g.down:
			return response{}, false
		}
	}
	if fault.Delay > 0 {
		select {
		case <-time.After(fault.Delay):
		case <-g.down:
			return response{}, false
		}
	}
	if fault.Status != 0 {
		return fault.response(), true
	}
	resp, fresh := r.accept(in, fault.PDUErrors)
	if fresh && r.opts.OnPDU != nil {
		for _, p := range in.pdus {
			r.opts.OnPDU(p.EventID, p.RoomID, in.received)
		}
	}
	if fresh && r.opts.OnEDU != nil {
		for _, e := range in.edus {
			e.TxnID, e.Received = in.txnID, in.received
			r.opts.OnEDU(e)
		}
	}
	if fresh && r.opts.OnTransaction != nil {
		r.opts.OnTransaction(in.transaction(), in.pduList(fault.PDUErrors))
	}
	return resp, true
}

func (in *incoming) transaction() Transaction {
	return Transaction{TxnID: in.txnID, OriginServerTS: in.ts, PDUs: in.nPDUs, EDUs: in.nEDUs, Received: in.received, Peer: in.peer}
}

func (in *incoming) pduList(pduErrors map[string]string) []PDU {
	pdus := make([]PDU, len(in.pdus))
	for i, p := range in.pdus {
		pdus[i] = PDU{EventID: p.EventID, RoomID: p.RoomID, TxnID: in.txnID, Received: in.received, Error: pduErrors[p.EventID]}
	}
	return pdus
}

// accept records a new transaction, or answers a known txnId from the cache
// as Synapse does for 24 hours (here: for the receiver's lifetime).
func (r *Receiver) accept(in *incoming, pduErrors map[string]string) (resp response, fresh bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.bumpLocked()
	s := &r.store
	if idx, ok := s.byTxnID[in.txnID]; ok {
		if s.txns[idx].bodyHash != in.bodyHash {
			r.violateLocked("txn %s reused with a different body: a retry must resend the same transaction", in.txnID)
		}
		r.dups++
		return s.answer(idx), false
	}
	idx := s.addTxn(in, r.opts.KeepBodies, !r.opts.DiscardEDUs)
	for _, p := range in.pdus {
		errText := pduErrors[p.EventID]
		if s.addPDU(idx, p, errText) {
			r.violateLocked("txn %s: event %s delivered again after the receiver answered it with an error (per-PDU errors are final)", in.txnID, p.EventID)
		}
	}
	r.pduCount.Add(int64(len(in.pdus)))
	return s.answer(idx), true
}
