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

// MaxEDUs is the most EDUs one transaction may carry.
const MaxEDUs = 100

// PDU is one PDU as published (Raw) and in canonical JSON (Canonical).
type PDU struct {
	Raw, Canonical []byte
}

// Build returns the body to send and its canonical form. origin must be a
// valid server name (which needs no JSON escaping).
func Build(origin string, ts int64, pdus []PDU) (body, canonical []byte) {
	return BuildWithEDUs(origin, ts, pdus, nil)
}

// BuildWithEDUs is Build with EDUs, each already in canonical JSON
// ({"content":...,"edu_type":...}); "edus" is left out when there are none,
// as Synapse does.
func BuildWithEDUs(origin string, ts int64, pdus []PDU, edus [][]byte) (body, canonical []byte) {
	size := 64 + len(origin)
	for _, e := range edus {
		size += len(e) + 1
	}
	csize := size
	for _, p := range pdus {
		size += len(p.Raw) + 1
		csize += len(p.Canonical) + 1
	}
	body = appendBody(make([]byte, 0, size), origin, ts, pdus, edus, false)
	canonical = appendBody(make([]byte, 0, csize), origin, ts, pdus, edus, true)
	return body, canonical
}

// appendBody writes the members in canonical order: edus, origin,
// origin_server_ts, pdus.
func appendBody(b []byte, origin string, ts int64, pdus []PDU, edus [][]byte, canonical bool) []byte {
	b = append(b, '{')
	if len(edus) > 0 {
		b = append(b, `"edus":[`...)
		for i, e := range edus {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, e...)
		}
		b = append(b, "],"...)
	}
	b = append(b, `"origin":"`...)
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
	return IDWithEDUs(epoch, seqs, nil)
}

// IDWithEDUs is ID for a transaction that also carries EDUs: it depends on
// the EDU stream sequences too (ascending), so that a transaction rebuilt
// after a restart with the same PDUs and EDUs gets the same id, and one
// with other EDUs does not. Without EDUs it is ID.
func IDWithEDUs(epoch string, seqs, eduSeqs []uint64) string {
	h := fnv.New64a()
	var buf [8]byte
	write := func(s uint64) {
		for i := range buf {
			buf[i] = byte(s >> (8 * i))
		}
		h.Write(buf[:])
	}
	for _, s := range seqs {
		write(s)
	}
	if len(eduSeqs) > 0 {
		write(^uint64(0)) // no PDU sequence: keeps PDUs and EDUs apart
		for _, s := range eduSeqs {
			write(s)
		}
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
	if len(eduSeqs) > 0 {
		b = append(b, 'e')
		b = strconv.AppendUint(b, uint64(len(eduSeqs)), 36)
		b = append(b, '_')
	}
	return string(strconv.AppendUint(b, h.Sum64(), 36))
}
