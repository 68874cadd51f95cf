package streams

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is the dead-letter record of an envelope refused whole: the
// envelope as published, the reason and the PDU stream sequence it had.
// Its Nats-Msg-Id, pdu-<seq>, makes recording it again (after a restart,
// or by a second replica) a no-op within the stream's duplicate window.
func DeadLetter(envelope []byte, seq uint64, reason error) *nats.Msg {
	dl := nats.NewMsg(DeadLetterPDU)
	dl.Data = envelope
	dl.Header.Set(HeaderReason, reason.Error())
	dl.Header.Set(HeaderSourceSeq, strconv.FormatUint(seq, 10))
	dl.Header.Set(jetstream.MsgIDHeader, "pdu-"+strconv.FormatUint(seq, 10))
	return dl
}

// DestinationDeadLetter is the dead-letter record of one refused
// destination of an envelope the reader accepted: the envelope as
// published, with the destination (quoted) and its index in headers. Its
// id is pdu-<seq>-<index>.
func DestinationDeadLetter(envelope []byte, seq uint64, ref RefusedDestination) *nats.Msg {
	dl := DeadLetter(envelope, seq, ref.Reason)
	index := strconv.Itoa(ref.Index)
	dl.Header.Set(HeaderDestination, quoteName(ref.Name))
	dl.Header.Set(HeaderDestinationIndex, index)
	dl.Header.Set(jetstream.MsgIDHeader, "pdu-"+strconv.FormatUint(seq, 10)+"-"+index)
	return dl
}
