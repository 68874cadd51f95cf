package edu

import (
	"container/list"
	"encoding/json"
	"strconv"

	"github.com/fedsender/fedsender/streams"
)

// part is one coalescing unit of a presence or receipt EDU: a user's
// presence, or one user's receipt of one type in one room.
type part struct {
	room, rtype, user string // receipts: where the value goes
	raw               []byte // the presence push item, or the receipt value
}

// entry is a droppable EDU waiting to be sent, under its coalescing key.
type entry struct {
	kind    Kind
	eduType string
	key     string
	seq     uint64
	ts      int64
	due     int64  // ms; 0: now. Before it, it waits for another reason to send
	content []byte // typing and other types: the content as published
	parts   []part // presence and receipts
	elem    *list.Element
}

// entryOverhead is what an entry costs beyond its strings and content:
// the struct, its list element and its map slot, roughly.
const entryOverhead = 256

// size estimates the memory the entry holds.
func (e *entry) size() int {
	n := entryOverhead + len(e.eduType) + len(e.key) + len(e.content)
	for _, p := range e.parts {
		n += len(p.room) + len(p.rtype) + len(p.user) + len(p.raw)
	}
	return n
}

// keyed is one kind's droppable EDUs, oldest first, by key.
type keyed struct {
	order *list.List
	byKey map[string]*entry
}

func newKeyed() *keyed { return &keyed{order: list.New(), byKey: map[string]*entry{}} }

func (k *keyed) len() int { return k.order.Len() }

func (k *keyed) front() *entry {
	if e := k.order.Front(); e != nil {
		return e.Value.(*entry)
	}
	return nil
}

func (k *keyed) remove(e *entry) {
	k.order.Remove(e.elem)
	delete(k.byKey, e.key)
}

// units is a droppable EDU's entries as split derives them, without a
// destination's pacing: Prepare computes them once per EDU, and every
// destination's outbox copies them.
type units []entry

// Prepare derives a droppable EDU's coalescing units from its content once,
// for every destination it goes to (Outbox.Add copies them instead of
// parsing the content again per destination). Must-deliver EDUs need none.
func Prepare(e *streams.EDU) {
	if KindOf(e.Type).MustDeliver() {
		return
	}
	entries := split(e.Type, e.Key, 0, 0, 0, e.Content)
	u := make(units, len(entries))
	for i, en := range entries {
		u[i] = *en
	}
	e.Units = u
}

// entriesOf returns the item's entries for one destination: copies of
// its prepared units, or split's when it has none.
func entriesOf(it streams.EDUItem) []*entry {
	u, ok := it.EDU.Units.(units)
	if !ok {
		return split(it.EDU.Type, it.EDU.Key, it.Seq, it.TS, it.NotBefore, it.EDU.Content)
	}
	out := make([]*entry, len(u))
	for i := range u {
		e := u[i]
		e.seq, e.ts, e.due = it.Seq, it.TS, it.NotBefore
		out[i] = &e
	}
	return out
}

// split turns a droppable EDU into its entries: presence and receipts one
// per user (per room and receipt type) unless the publisher gave a key,
// typing one per room and user, anything else one per key or, without a
// key, one of its own. Content that does not have the shape its type
// should is forwarded as given, as one entry of the other types.
func split(eduType, key string, seq uint64, ts, due int64, content []byte) []*entry {
	kind := KindOf(eduType)
	base := entry{kind: kind, eduType: eduType, key: key, seq: seq, ts: ts, due: due}
	one := func(k Kind, key string, parts []part) []*entry {
		e := base
		e.kind, e.key, e.parts = k, key, parts
		if parts == nil {
			e.content = content
		}
		return []*entry{&e}
	}
	switch kind {
	case Presence:
		if parts, ok := presenceParts(content); ok {
			if key != "" {
				return one(Presence, key, parts)
			}
			out := make([]*entry, len(parts))
			for i, p := range parts {
				out[i] = &entry{kind: Presence, eduType: eduType, key: p.user, seq: seq, ts: ts, due: due, parts: []part{p}}
			}
			return out
		}
	case Receipt:
		if parts, ok := receiptParts(content); ok {
			if key != "" {
				return one(Receipt, key, parts)
			}
			out := make([]*entry, len(parts))
			for i, p := range parts {
				out[i] = &entry{kind: Receipt, eduType: eduType, key: p.room + "\x00" + p.rtype + "\x00" + p.user,
					seq: seq, ts: ts, due: due, parts: []part{p}}
			}
			return out
		}
	case Typing:
		var t struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(content, &t) == nil && t.RoomID != "" && t.UserID != "" {
			if key == "" {
				key = t.RoomID + "\x00" + t.UserID
			}
			return one(Typing, key, nil)
		}
	}
	if key == "" {
		key = "#" + strconv.FormatUint(seq, 10) // never coalesced
	}
	return one(Other, eduType+"\x00"+key, nil)
}

func presenceParts(content []byte) ([]part, bool) {
	var c struct {
		Push []json.RawMessage `json:"push"`
	}
	if json.Unmarshal(content, &c) != nil || len(c.Push) == 0 {
		return nil, false
	}
	parts := make([]part, len(c.Push))
	for i, raw := range c.Push {
		var u struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(raw, &u) != nil || u.UserID == "" {
			return nil, false
		}
		parts[i] = part{user: u.UserID, raw: raw}
	}
	return parts, true
}

// ReceiptEventIDs returns the event ids an m.receipt content names.
func ReceiptEventIDs(content []byte) []string {
	parts, _ := receiptParts(content)
	var ids []string
	for _, p := range parts {
		var v struct {
			EventIDs []string `json:"event_ids"`
		}
		if json.Unmarshal(p.raw, &v) == nil {
			ids = append(ids, v.EventIDs...)
		}
	}
	return ids
}

func receiptParts(content []byte) ([]part, bool) {
	var c map[string]map[string]map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil || len(c) == 0 {
		return nil, false
	}
	var parts []part
	for room, types := range c {
		for rtype, users := range types {
			for user, raw := range users {
				parts = append(parts, part{room: room, rtype: rtype, user: user, raw: raw})
			}
		}
	}
	return parts, len(parts) > 0
}
