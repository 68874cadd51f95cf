package receiver

import (
	"bytes"
	"hash/maphash"
	"time"
)

// PDU is one PDU of an accepted transaction.
type PDU struct {
	EventID  string
	RoomID   string
	TxnID    string    // the transaction that carried it
	Received time.Time // when that transaction was accepted
	// Error is the per-PDU error the receiver answered (Fault.PDUErrors),
	// "" when the PDU was accepted.
	Error string
}

// EDU is one EDU of an accepted transaction.
type EDU struct {
	Type     string
	Content  []byte // as sent
	TxnID    string
	Received time.Time
}

// Transaction is one accepted transaction.
type Transaction struct {
	TxnID          string
	OriginServerTS int64
	PDUs           int // PDUs delivered, malformed ones included
	EDUs           int
	Received       time.Time
	Body           []byte // the raw body; nil unless Options.KeepBodies
	Peer           string // the sender, as Options.Peer named it; "" without it
}

// store keeps accepted transactions and their PDUs. Event and room ids live
// in byte chunks and PDU records hold only offsets, so millions of PDUs cost
// the garbage collector nothing to scan. The caller holds Receiver.mu.
type store struct {
	chunks  [][]byte // event id then room id of each PDU, back to back
	pdus    []pduRecord
	edus    []EDU             // few enough in tests to keep as they are
	pduErrs map[uint32]string // PDU index -> injected error; rare
	txns    []txnRecord
	byTxnID map[string]uint32 // txnId -> index in txns
	seen    map[uint64]bool   // event id hash -> answered with an error
	hashes  maphash.Seed      // for event ids and bodies
	redeliv int               // PDUs whose event id was delivered before
}

type pduRecord struct {
	chunk, off     uint32
	evLen, roomLen uint16 // ids over 255 bytes are refused before this
	txn            uint32
}

type txnRecord struct {
	id       string
	ts       int64
	received int64 // unix nanoseconds
	peer     string
	bodyHash uint64
	firstPDU uint32
	nPDUs    int // valid PDUs stored, from firstPDU on
	nAll     int // PDUs in the body, malformed ones included
	nEDUs    int
	body     []byte
}

const (
	minChunk = 4 << 10
	maxChunk = 1 << 20
)

func newStore() store {
	return store{
		pduErrs: map[uint32]string{},
		byTxnID: map[string]uint32{},
		seen:    map[uint64]bool{},
		hashes:  maphash.MakeSeed(),
	}
}

func (s *store) hashBody(body []byte) uint64 { return maphash.Bytes(s.hashes, body) }

// addTxn records a transaction whose PDUs follow with addPDU.
func (s *store) addTxn(in *incoming, keepBody, keepEDUs bool) uint32 {
	rec := txnRecord{
		id:       in.txnID,
		ts:       in.ts,
		received: in.received.UnixNano(),
		peer:     in.peer,
		bodyHash: in.bodyHash,
		firstPDU: uint32(len(s.pdus)),
		nAll:     in.nPDUs,
		nEDUs:    in.nEDUs,
	}
	if keepBody {
		rec.body = in.body
	}
	idx := uint32(len(s.txns))
	s.txns = append(s.txns, rec)
	if keepEDUs {
		for _, e := range in.edus {
			e.TxnID, e.Received = in.txnID, in.received
			s.edus = append(s.edus, e)
		}
	}
	s.byTxnID[in.txnID] = idx
	return idx
}

// addPDU appends a PDU to transaction txn, the last one added, and counts it
// if its event was delivered before. refused reports whether an earlier
// delivery was answered with an error.
func (s *store) addPDU(txn uint32, p pduIDs, errText string) (refused bool) {
	chunk, off := s.appendIDs(p.EventID, p.RoomID)
	idx := uint32(len(s.pdus))
	s.pdus = append(s.pdus, pduRecord{
		chunk: chunk, off: off,
		evLen: uint16(len(p.EventID)), roomLen: uint16(len(p.RoomID)),
		txn: txn,
	})
	s.txns[txn].nPDUs++
	if errText != "" {
		s.pduErrs[idx] = errText
	}
	// A 64-bit hash stands for the event id: a collision among even ten
	// million events has a probability of about 3e-6.
	h := maphash.String(s.hashes, p.EventID)
	refused, ok := s.seen[h]
	if ok {
		s.redeliv++
	}
	s.seen[h] = refused || errText != ""
	return refused
}

func (s *store) appendIDs(ev, room string) (chunk, off uint32) {
	n := len(ev) + len(room)
	last := len(s.chunks) - 1
	if last < 0 || cap(s.chunks[last])-len(s.chunks[last]) < n {
		size := minChunk
		if last >= 0 {
			size = min(2*cap(s.chunks[last]), maxChunk)
		}
		s.chunks = append(s.chunks, make([]byte, 0, max(size, n)))
		last++
	}
	c := s.chunks[last]
	off = uint32(len(c))
	s.chunks[last] = append(append(c, ev...), room...)
	return uint32(last), off
}

func (s *store) ids(p pduRecord) (ev, room []byte) {
	c := s.chunks[p.chunk]
	ev = c[p.off : p.off+uint32(p.evLen)]
	room = c[p.off+uint32(p.evLen) : p.off+uint32(p.evLen)+uint32(p.roomLen)]
	return ev, room
}

// answer is the 200 body for transaction txn: {"pdus": {id: {} | {"error": e}}}.
// It is rebuilt from the records rather than cached, so a retry gets the
// same answer at no memory cost.
func (s *store) answer(txn uint32) response {
	t := &s.txns[txn]
	body := make([]byte, 0, 16+t.nPDUs*64)
	body = append(body, `{"pdus":{`...)
	for i := range t.nPDUs {
		idx := t.firstPDU + uint32(i)
		if i > 0 {
			body = append(body, ',')
		}
		ev, _ := s.ids(s.pdus[idx])
		body = appendJSONString(body, ev)
		if e, ok := s.pduErrs[idx]; ok {
			body = append(body, `:{"error":`...)
			body = appendJSONString(body, []byte(e))
			body = append(body, '}')
		} else {
			body = append(body, `:{}`...)
		}
	}
	body = append(body, "}}"...)
	return response{status: 200, body: body}
}

func (s *store) pduList() []PDU {
	out := make([]PDU, len(s.pdus))
	for i, p := range s.pdus {
		ev, room := s.ids(p)
		t := &s.txns[p.txn]
		out[i] = PDU{
			EventID:  string(ev),
			RoomID:   string(room),
			TxnID:    t.id,
			Received: time.Unix(0, t.received),
			Error:    s.pduErrs[uint32(i)],
		}
	}
	return out
}

func (s *store) txnList() []Transaction {
	out := make([]Transaction, len(s.txns))
	for i, t := range s.txns {
		out[i] = Transaction{
			TxnID:          t.id,
			OriginServerTS: t.ts,
			PDUs:           t.nAll,
			EDUs:           t.nEDUs,
			Received:       time.Unix(0, t.received),
			Body:           bytes.Clone(t.body),
			Peer:           t.peer,
		}
	}
	return out
}
