package destination

import (
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/streams"
)

// Messages the supervisor sends to a destination actor.
type (
	// Enqueue hands the actor PDUs; Through is the highest stream sequence
	// the supervisor has looked at for this destination.
	Enqueue struct {
		Items   []streams.Item
		Through uint64
	}
	// EnqueueEDU hands the actor EDUs, in EDU stream order.
	EnqueueEDU struct {
		Items []streams.EDUItem
	}
	// RestoreEDUs tells an actor replacing one that failed to read the
	// must-deliver EDUs after its EDU offset, through Through, from the
	// stream again: they were in the failed actor's memory.
	RestoreEDUs struct{ Through uint64 }
	// Wake tells the actor its backoff is over (or it was started): try now.
	Wake struct{}
	// ResetConnection clears the retry timings and sends at once.
	ResetConnection struct{}
	// GoLive ends catch-up: the supervisor feeds every PDU after Through.
	GoLive struct{}
	// Rescan: PDUs arrived beyond the catch-up scan; read the stream again.
	Rescan struct{}
	// Drain: the partition moves to another replica; start no other
	// transaction, and answer Drained once none is in flight.
	Drain struct{}
)

// Messages a destination actor sends its supervisor.
type (
	// Progress reports the actor's position. DoneThrough: every PDU for this
	// destination at or below it is acknowledged (or skipped by catch-up).
	// EDUDone is the EDU offset: every must-deliver EDU at or below it is
	// acknowledged, and every other handed over; EDUPending counts the
	// must-deliver EDUs held. DoneThrough and Offset are 0 while catching
	// up.
	Progress struct {
		Destination string
		DoneThrough uint64
		Offset      uint64
		EDUDone     uint64
		EDUPending  int
		// EDUHeldBytes estimates the memory its droppable EDUs hold.
		EDUHeldBytes int
		// EDUAcked: the destination just acknowledged must-deliver EDUs.
		EDUAcked bool
	}
	// Changed reports a state change to persist in the destination's log.
	Changed struct {
		Destination string
		Event       destination.Event
	}
	// CatchUpScanned reports that catch-up has read the stream through
	// Through; the supervisor answers GoLive or Rescan.
	CatchUpScanned struct {
		Destination string
		Through     uint64
	}
	// Crashed reports that the actor panicked; the supervisor replaces it.
	Crashed struct {
		Destination string
		Panic       any
	}
	// Drained answers Drain: no transaction is in flight, and none will
	// start.
	Drained struct{ Destination string }
)
