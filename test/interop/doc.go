// Package interop proves fedsender's deliveries against a real homeserver:
// Dendrite v0.13.8, built once from the Go module proxy into the user's
// cache directory. The tests join a user of fedsender's origin to a Dendrite
// room over federation, publish that user's events (and EDUs) to a real
// fedsender process, and check through Dendrite's client API, as a local
// user would see them, that everything arrives, in order and exactly once,
// also across a kill -9 of fedsender.
//
// The tests are behind the build tag interop, so the main suite neither
// builds Dendrite nor waits for it; run them with
//
//	go tool task test:interop
package interop
