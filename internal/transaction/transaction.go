// Package transaction builds the body of PUT /_matrix/federation/v1/send/{txnId}
// from PDUs kept as raw bytes, together with the canonical form that the
// X-Matrix signature covers, without decoding and re-encoding the PDUs.
package transaction

import (
	"hash/fnv"
	"strconv"
)

// MaxPDUs is the most PDUs one transaction may carry.
const MaxPDUs = 50

// PDU is one PDU as published (Raw) and in canonical JSON (Canonical).
type PDU struct {
	Raw, Canonical []byte
}

// Build returns the body to send and its canonical form. origin must be a
// valid server name (which needs no JSON escaping).
func Build(origin string, ts int64, pdus []PDU) (body, canonical []byte) {
	size := 64 + len(origin)
	csize := size
	for _, p := range pdus {
		size += len(p.Raw) + 1
		csize += len(p.Canonical) + 1
	}
	body = appendBody(make([]byte, 0, size), origin, ts, pdus, false)
	canonical = appendBody(make([]byte, 0, csize), origin, ts, pdus, true)
	return body, canonical
}

func appendBody(b []byte, origin string, ts int64, pdus []PDU, canonical bool) []byte {
	b = append(b, `{"origin":"`...)
	b = append(b, origin...)
	b = append(b, `","origin_server_ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"pdus":[`...)
	for i, p := range pdus {
		if i > 0 {
			b = append(b, ',')
		}
		if canonical {
			b = append(b, p.Canonical...)
		} else {
			b = append(b, p.Raw...)
		}
	}
	return append(b, "]}"...)
}

// ID returns a transaction id that depends only on the stream generation
// (epoch) and the sequences of the PDUs carried, so a batch rebuilt after a
// restart gets the same id, and a different batch never does. It uses only
// [0-9a-z_].
func ID(epoch string, seqs []uint64) string {
	h := fnv.New64a()
	var buf [8]byte
	for _, s := range seqs {
		for i := range buf {
			buf[i] = byte(s >> (8 * i))
		}
		h.Write(buf[:])
	}
	b := make([]byte, 0, 48)
	b = append(b, epoch...)
	b = append(b, '_')
	if len(seqs) > 0 {
		b = strconv.AppendUint(b, seqs[0], 36)
		b = append(b, '_')
		b = strconv.AppendUint(b, seqs[len(seqs)-1], 36)
		b = append(b, '_')
	}
	b = strconv.AppendUint(b, uint64(len(seqs)), 36)
	b = append(b, '_')
	return string(strconv.AppendUint(b, h.Sum64(), 36))
}
