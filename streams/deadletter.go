package streams

import (
	"bytes"
	"encoding/json"
	"fmt"
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
// destination of a PDU the reader accepted: the envelope with only that
// destination (the PDU as published, but for insignificant white space),
// which is what a replay republishes, so that a room's odd server name
// costs one PDU's worth of storage per PDU, not the whole server list. The
// destination (quoted) and its index in the published envelope are in
// headers; the id is pdu-<seq>-<index>.
func DestinationDeadLetter(pdu *PDU, seq uint64, ref RefusedDestination) (*nats.Msg, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Envelope{RoomID: pdu.RoomID, EventID: pdu.EventID, PDU: pdu.Raw, Destinations: []string{ref.Name}}); err != nil {
		return nil, fmt.Errorf("streams: dead letter for %v: %w", ref, err)
	}
	dl := DeadLetter(bytes.TrimSuffix(b.Bytes(), []byte("\n")), seq, ref.Reason)
	index := strconv.Itoa(ref.Index)
	dl.Header.Set(HeaderDestination, quoteName(ref.Name))
	dl.Header.Set(HeaderDestinationIndex, index)
	dl.Header.Set(jetstream.MsgIDHeader, "pdu-"+strconv.FormatUint(seq, 10)+"-"+index)
	return dl, nil
}
