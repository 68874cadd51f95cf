// Package prereq names what fedsender's tests need from the machine besides
// Go — Synapse's Python signing libraries (the independent signature
// verifier), PostgreSQL server binaries (throwaway read-model databases) and
// the Redis server — and makes a missing one impossible to overlook.
//
// [Setup] is the first step of `go tool task test`: it checks every
// prerequisite, installs the missing ones with apt-get when it runs as root
// on Debian, and otherwise stops with the exact command to run. Inside the
// tests, [Require] fails a test whose prerequisite is missing, with the same
// command. A test is skipped only when FEDSENDER_TEST_SKIP names its
// prerequisite, and the test summary then lists it with that reason.
package prereq
