package partition

// publishGauges stores the partition's gauge values: its destinations by
// state, the PDUs waiting in their actors' queues with the stream time of
// the oldest, the must-deliver EDUs not yet acknowledged, and the memory
// the droppable EDUs hold. It runs at each checkpoint, so the gauges are at most one
// checkpoint interval old, and the delivery path pays nothing for them.
func (s *Supervisor) publishGauges() {
	g := s.cfg.Destination.Metrics.Partition(s.id)
	if g == nil {
		return
	}
	var healthy, backingOff, catchingUp, pending, oldest, pendingEDUs, heldEDUBytes int64
	for _, e := range s.entries {
		pendingEDUs += int64(e.eduPending)
		heldEDUBytes += int64(e.eduHeldBytes)
		switch {
		case e.catching:
			catchingUp++
		case e.state.Failing():
			backingOff++
		default:
			healthy++
		}
		if e.pid == nil {
			continue // no actor: nothing queued in memory
		}
		pending += e.queue.Pending.Load()
		if ts := e.queue.OldestTS.Load(); ts > 0 && (oldest == 0 || ts < oldest) {
			oldest = ts
		}
	}
	g.Healthy.Store(healthy)
	g.BackingOff.Store(backingOff)
	g.CatchingUp.Store(catchingUp)
	g.Pending.Store(pending)
	g.OldestPendingTS.Store(oldest)
	g.PendingEDUs.Store(pendingEDUs)
	g.HeldEDUBytes.Store(heldEDUBytes)
}
