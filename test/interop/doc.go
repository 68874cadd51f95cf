// Package interop proves fedsender's deliveries against a real homeserver:
// Dendrite v0.13.8, built once from the Go module proxy into the user's
// cache directory. The tests join a user of fedsender's origin to a Dendrite
// room over federation, publish that user's events (and EDUs) to a real
// fedsender process, and check through Dendrite's client API, as a local
// user would see them, that everything arrives, in order and exactly once,
// also across a kill -9 of fedsender.
//
// The parts, one file each:
//
//   - dendrite: the homeserver, on SQLite in a temporary directory, TLS on
//     its federation listener;
//   - front: Dendrite's federation front door, at Dendrite's server name:
//     it counts what Dendrite acknowledged (Dendrite answers 200 even for
//     events it rejects, so only its client API proves delivery) and can
//     hold transactions so that fedsender is killed with one in flight,
//     and let them go only once the killed sender hung up, so that Dendrite
//     never gets them;
//   - origin: the homeserver fedsender sends for, played by the test: it
//     serves fedsender's signing key as the origin's, the origin users'
//     device lists, and signs the origin's requests;
//   - room: a Dendrite room joined by a user of the origin (make_join and
//     send_join), whose events gomatrixserverlib builds and signs;
//   - edu: the EDUs the origin sends, one builder per kind (typing, read
//     receipt, presence, to-device, device-list update), published through
//     fedsender by env.publishEDU or sent straight to Dendrite by
//     env.sendDirect;
//   - sync: a local user's /sync stream, with a reader per kind of event:
//     messages, typing, receipts, presence, to-device, device_lists.changed;
//   - fedsender: the real fedsender process, kill -9 and restart, and the
//     EDU offset it stored (what it does not send again after a restart).
//
// A check of an EDU delivery is then: build the EDU, env.publishEDU, and
// env.sync.waitFor its reader; calibrate_test.go runs the same EDUs and
// readers without fedsender.
//
// The tests are behind the build tag interop, so the main suite neither
// builds Dendrite nor waits for it; run them with
//
//	go tool task test:interop
package interop
