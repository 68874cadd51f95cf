// Package service wires fedsender together: NATS (embedded or remote), the
// streams, the event log, the partition supervisors and their destination
// actors, the reader, the federation client, the read model and the admin
// listener. cmd/fedsender only parses flags and calls Run.
package service
