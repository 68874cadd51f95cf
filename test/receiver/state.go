package receiver

import (
	"context"
	"fmt"
	"slices"
)

// maxKeptViolations bounds the violation messages kept: a broken sender in a
// benchmark must not exhaust memory. ViolationCount counts them all.
const maxKeptViolations = 1000

type violations struct {
	kept  []string
	total int
}

// violate records a protocol violation.
func (r *Receiver) violate(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violateLocked(format, args...)
}

func (r *Receiver) violateLocked(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log.Warn("federation protocol violation", "violation", msg)
	r.viol.total++
	if len(r.viol.kept) < maxKeptViolations {
		r.viol.kept = append(r.viol.kept, msg)
	}
	r.bumpLocked()
}

func (r *Receiver) bump() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bumpLocked()
}

// Violations returns the protocol violations seen, oldest first (the first
// 1000). A correct sender causes none.
func (r *Receiver) Violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.viol.kept...)
}

// ViolationCount is the number of violations seen, including those beyond
// the ones Violations keeps.
func (r *Receiver) ViolationCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.viol.total
}

// PDUs returns the PDUs of accepted transactions in arrival order, malformed
// ones left out. A retried transaction answered from the txnId cache adds
// nothing; a PDU sent again in a new transaction appears again.
func (r *Receiver) PDUs() []PDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.pduList()
}

// EDUs returns the well-formed EDUs of accepted transactions in arrival
// order. A retried transaction answered from the txnId cache adds nothing.
func (r *Receiver) EDUs() []EDU {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.store.edus)
}

// PDUCount is len(PDUs()), without copying them.
func (r *Receiver) PDUCount() int { return int(r.pduCount.Load()) }

// Transactions returns the accepted transactions in arrival order.
func (r *Receiver) Transactions() []Transaction {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.txnList()
}

// Requests is the number of PUT /send requests seen, faulted and refused
// ones included.
func (r *Receiver) Requests() int { return int(r.requests.Load()) }

// Duplicates is the number of requests answered with the answer to an
// earlier request with the same txnId: from the txnId cache, or by waiting
// for that request while it was in flight.
func (r *Receiver) Duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

// RedeliveredPDUs is the number of PDUs whose event id had already been
// delivered in an earlier accepted transaction. Delivery is at-least-once,
// so this is not a violation, but a good sender keeps it low.
func (r *Receiver) RedeliveredPDUs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.redeliv
}

// InFlight is 1 while a transaction is being processed (or hung), else 0.
func (r *Receiver) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flight != nil {
		return 1
	}
	return 0
}

// Wait blocks until cond returns true or ctx ends. cond is evaluated at the
// start and after every change of the receiver's state (a request, a
// transaction, a violation, a fault, Stop or Restart); it may call the
// receiver's methods.
func (r *Receiver) Wait(ctx context.Context, cond func() bool) error {
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
