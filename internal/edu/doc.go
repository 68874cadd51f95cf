// Package edu is one destination's EDU outbox: what a destination actor
// holds of the EDUs for its server between transactions, and how it fills a
// transaction's 100 EDU slots.
//
// Two kinds of EDU, as Synapse has them:
//
//   - must-deliver (m.direct_to_device, m.device_list_update,
//     m.signing_key_update, org.matrix.signing_key_update): held in stream
//     order until the destination acknowledges them; the outbox's Done
//     position (the EDU stream sequence below which every one is
//     acknowledged) is the destination's EDU offset, persisted, so that
//     after a restart the reader hands them over again;
//   - droppable (m.typing, m.receipt, m.presence, and any other type):
//     in memory only, coalesced on (type, key): a newer one replaces the
//     one not yet sent. Presence is merged into one m.presence EDU of at
//     most 50 users, receipts into at most 5 m.receipt EDUs; typing is
//     not kept for a destination in backoff and expires after 30 s;
//     receipts, presence and other types are kept (bounded, newest per
//     key) while the destination is down, and sent when it is back.
//
// Fill order, as Synapse: presence, receipts, to-device (leaving 10
// slots), device lists and signing keys (leaving a few slots to other
// types and typing when some wait, so that no kind starves), other types,
// typing last.
package edu
