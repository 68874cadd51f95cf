package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

const (
	maxPDUs = 50
	maxEDUs = 100
)

// wireTxn is the transaction body as sent, its fields raw slices of the body:
// only a PDU's event_id and room_id and an EDU's edu_type and the kind of its
// content are looked at later.
type wireTxn struct {
	origin, originServerTS []byte
	pdus, edus             [][]byte
	hasPDUs                bool
	problem                string // a field of the wrong type, for check
}

// pduIDs is the part of a PDU the receiver reads.
type pduIDs struct {
	EventID, RoomID string
}

// incoming is a transaction that passed the checks, ready to process.
type incoming struct {
	txnID    string
	body     []byte
	bodyHash uint64
	received time.Time
	peer     string // Options.Peer's name for the sender
	ts       int64
	pdus     []pduIDs // the well-formed PDUs, in order
	edus     []EDU    // the well-formed EDUs, in order
	nPDUs    int      // all PDUs, malformed ones included
	nEDUs    int
}

// decode parses the body as Synapse's parse_json_object_from_request does:
// not JSON is M_NOT_JSON, not an object M_BAD_JSON. A field of the wrong type
// is not a JSON error there; it is left in w.problem for check, which runs
// after authentication.
func (r *Receiver) decode(txnID string, body []byte) (w wireTxn, resp response, answered bool) {
	if !json.Valid(body) {
		r.violate("txn %s: body is not JSON", txnID)
		return w, errorResponse(http.StatusBadRequest, "M_NOT_JSON", "Content not JSON."), true
	}
	// elements collects an array's elements; null counts as absent.
	elements := func(field string, val []byte, dst *[][]byte) (present bool) {
		*dst = nil
		if string(val) == "null" {
			return false
		}
		if err := forEachElement(val, func(e []byte) { *dst = append(*dst, e) }); err != nil {
			w.problem = field + " is " + orMissing(val) + ", not an array"
		}
		return true
	}
	err := forEachMember(body, func(key, val []byte) {
		switch string(key) { // the last of duplicate keys wins, as in encoding/json
		case `"origin"`:
			w.origin = val
		case `"origin_server_ts"`:
			w.originServerTS = val
		case `"pdus"`:
			w.hasPDUs = elements("pdus", val, &w.pdus)
		case `"edus"`:
			elements("edus", val, &w.edus)
		}
	})
	if err != nil {
		r.violate("txn %s: body is not a JSON object", txnID)
		return w, errorResponse(http.StatusBadRequest, "M_BAD_JSON", "Content must be a JSON object."), true
	}
	return w, response{}, false
}

// authenticate checks every X-Matrix Authorization header: origin,
// destination, key id and signature. answered is true when the request is
// refused, with Synapse's answer.
func (r *Receiver) authenticate(req *http.Request, txnID string, body []byte) (resp response, answered bool) {
	unauthorized := func(msg string) (response, bool) {
		return errorResponse(http.StatusUnauthorized, "M_UNAUTHORIZED", msg), true
	}
	var headers []string
	for _, h := range req.Header.Values("Authorization") {
		if strings.HasPrefix(h, "X-Matrix") {
			headers = append(headers, h)
		}
	}
	if len(headers) == 0 {
		r.violate("txn %s: no X-Matrix Authorization header", txnID)
		return unauthorized("Missing Authorization headers")
	}
	for _, h := range headers {
		auth, err := xmatrix.ParseAuthorization(h)
		if err != nil {
			r.violate("txn %s: malformed Authorization header %q: %v", txnID, h, err)
			return errorResponse(http.StatusBadRequest, "M_UNAUTHORIZED", "Malformed Authorization header"), true
		}
		switch {
		case auth.Destination == "":
			// Synapse accepts a header without destination; every current
			// sender includes it, and so must fedsender.
			r.violate("txn %s: Authorization header without destination", txnID)
			auth.Destination = r.serverName
		case auth.Destination != r.serverName:
			r.violate("txn %s: Authorization destination %q, want %q", txnID, auth.Destination, r.serverName)
			return unauthorized("Destination mismatch in auth header")
		}
		if auth.Origin != r.opts.Origin {
			r.violate("txn %s: Authorization origin %q, want %q", txnID, auth.Origin, r.opts.Origin)
			return unauthorized("Failed to find any key to satisfy: origin " + auth.Origin)
		}
		if auth.KeyID != r.opts.OriginKeyID {
			r.violate("txn %s: Authorization key %q, want %q", txnID, auth.KeyID, r.opts.OriginKeyID)
			return unauthorized("Failed to find any key to satisfy: key " + auth.KeyID)
		}
		if r.opts.SkipSignatureCheck {
			continue
		}
		err = xmatrix.VerifyRequest(r.opts.OriginKey, auth, req.Method, req.RequestURI, body)
		if errors.Is(err, canonicaljson.ErrInvalid) {
			r.violate("txn %s: body cannot be canonical JSON: %v", txnID, err)
			return errorResponse(http.StatusBadRequest, "M_BAD_JSON", "Content is not valid canonical JSON"), true
		}
		if err != nil {
			r.violate("txn %s: signature of %s %s does not verify with %s: %v", txnID, req.Method, req.RequestURI, auth.KeyID, err)
			return unauthorized("Invalid signature for server " + auth.Origin + " with key " + auth.KeyID)
		}
	}
	return response{}, false
}

// check applies the transaction rules: origin, origin_server_ts, the PDU and
// EDU limits (Synapse answers 400 {} above them) and the shape of each PDU and
// EDU. Malformed PDUs and EDUs are violations but, as in Synapse, only make
// the PDU be skipped: the transaction is still processed.
func (r *Receiver) check(txnID string, w wireTxn) (in *incoming, resp response, answered bool) {
	badJSON := func(format string, args ...any) (*incoming, response, bool) {
		r.violate("txn %s: "+format, append([]any{txnID}, args...)...)
		return nil, errorResponse(http.StatusBadRequest, "M_BAD_JSON", "Invalid transaction"), true
	}
	if w.problem != "" {
		return badJSON("%s", w.problem)
	}
	if origin, ok := jsonString(w.origin); !ok || origin != r.opts.Origin {
		return badJSON("origin %s, want %q", orMissing(w.origin), r.opts.Origin)
	}
	ts, ok := parseTS(w.originServerTS)
	if !ok {
		return badJSON("origin_server_ts %s is not a non-negative integer", orMissing(w.originServerTS))
	}
	if !w.hasPDUs {
		return badJSON("no pdus array")
	}
	if len(w.pdus) > maxPDUs || len(w.edus) > maxEDUs {
		r.violate("txn %s: %d PDUs and %d EDUs, at most %d and %d allowed", txnID, len(w.pdus), len(w.edus), maxPDUs, maxEDUs)
		return nil, response{status: http.StatusBadRequest, body: []byte("{}")}, true
	}
	in = &incoming{txnID: txnID, ts: ts, nPDUs: len(w.pdus), nEDUs: len(w.edus), pdus: make([]pduIDs, 0, len(w.pdus))}
	for i, raw := range w.pdus {
		if p, ok := r.checkPDU(txnID, i, raw); ok {
			in.pdus = append(in.pdus, p)
		}
	}
	for i, raw := range w.edus {
		if e, ok := r.checkEDU(txnID, i, raw); ok {
			in.edus = append(in.edus, e)
		}
	}
	return in, response{}, false
}

func (r *Receiver) checkPDU(txnID string, i int, raw []byte) (pduIDs, bool) {
	var p pduIDs
	var evRaw, roomRaw []byte
	err := forEachMember(raw, func(key, val []byte) {
		switch string(key) {
		case `"event_id"`:
			evRaw = val
		case `"room_id"`:
			roomRaw = val
		}
	})
	if err != nil {
		r.violate("txn %s: PDU %d is %s, not an object", txnID, i, orMissing(raw))
		return p, false
	}
	ev, evOK := jsonString(evRaw)
	if evRaw == nil && r.opts.RoomVersion != "" {
		ev, evOK = referenceHash(r.opts.RoomVersion, raw)
	}
	room, roomOK := jsonString(roomRaw)
	p = pduIDs{EventID: ev, RoomID: room}
	switch {
	case !evOK || len(ev) < 2 || ev[0] != '$' || len(ev) > maxIDBytes:
		r.violate("txn %s: PDU %d: event_id %s is not a string $... of at most %d bytes", txnID, i, orMissing(evRaw), maxIDBytes)
	case !roomOK || len(room) < 2 || room[0] != '!' || len(room) > maxIDBytes:
		r.violate("txn %s: PDU %d (%s): room_id %s is not a string !... of at most %d bytes", txnID, i, ev, orMissing(roomRaw), maxIDBytes)
	default:
		return p, true
	}
	return p, false
}

func (r *Receiver) checkEDU(txnID string, i int, raw []byte) (EDU, bool) {
	var typeRaw, content []byte
	err := forEachMember(raw, func(key, val []byte) {
		switch string(key) {
		case `"edu_type"`:
			typeRaw = val
		case `"content"`:
			content = val
		}
	})
	eduType, ok := jsonString(typeRaw)
	switch {
	case err != nil:
		r.violate("txn %s: EDU %d is %s, not an object", txnID, i, orMissing(raw))
	case !ok || eduType == "":
		r.violate("txn %s: EDU %d: edu_type %s is not a non-empty string", txnID, i, orMissing(typeRaw))
	case len(content) == 0 || content[0] != '{':
		r.violate("txn %s: EDU %d (%s): content %s is not an object", txnID, i, eduType, orMissing(content))
	default:
		return EDU{Type: eduType, Content: bytes.Clone(content)}, true
	}
	return EDU{}, false
}

// parseTS accepts a JSON integer in [0, 2^53-1], the canonical JSON range.
func parseTS(raw []byte) (int64, bool) {
	if len(raw) == 0 || raw[0] == '-' || bytes.ContainsAny(raw, ".eE") {
		return 0, false
	}
	ts, err := strconv.ParseInt(string(raw), 10, 64)
	return ts, err == nil && ts <= 1<<53-1
}

func orMissing(raw []byte) string {
	if raw == nil {
		return "missing"
	}
	if len(raw) > 80 {
		return string(raw[:80]) + "..."
	}
	return string(raw)
}
