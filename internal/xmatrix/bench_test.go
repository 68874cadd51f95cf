package xmatrix

import (
	"strconv"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

// transaction55K is a full transaction: 50 PDUs of about 1.1 KB each, 55 KB.
func transaction55K(b *testing.B) []byte {
	b.Helper()
	pdus := make([]string, 50)
	for i := range pdus {
		pdus[i] = `{"auth_events":["$oQz2hOl9o0wWs2P2hbkQDQvhBFQwVz7i6ciwgNL4AUY","$X6ihiUnQOP1wzZJU2YQ0BUzJ4d8IQhD4uO3jdGBRxHE","$Cd7F9Iu4rKMf0Fg6hGzEaT9GkV3R5o7DnXlcrs5LwNE"],` +
			`"content":{"body":"Hello, world! été 😀 <b>bold</b> & \"quotes\"\nsecond line ` + strings.Repeat("lorem ipsum ", 33) + `","msgtype":"m.text"},` +
			`"depth":` + strconv.Itoa(100000+i) + `,"hashes":{"sha256":"ZBnDBlC0MaLVN0UsBEF5wKWA3UAs/9A7L7wJVgkMqG0"},"origin":"example.org","origin_server_ts":1700000000000,` +
			`"prev_events":["$1wDbgbqasIMaxbA0AkrsM1gj3Yb5JgmTcKTB44g3q4o"],"room_id":"!OGEhHVWSdvArJzumhm:matrix.org","sender":"@alice:example.org",` +
			`"signatures":{"example.org":{"ed25519:a_XKzK":"mDkdrmQBeGO6wdWWyoHrzIBz0hPIrrdAgUwOv9BjUDE8xzhqZc4dWcSr5UK0AvQQnJ7JLS9Pe4y5dv/U/YzIAg"}},"type":"m.room.message"}`
	}
	body, err := canonicaljson.Canonicalize([]byte(`{"origin":"example.org","origin_server_ts":1700000000000,"pdus":[` + strings.Join(pdus, ",") + `]}`))
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkSignRequestTransaction signs an already canonical 55 KB body: the
// sender's cost per transaction attempt.
func BenchmarkSignRequestTransaction(b *testing.B) {
	key := newKey(b, "bench")
	body := transaction55K(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		SignRequest(key, "example.org", "dest.example", "PUT", "/_matrix/federation/v1/send/1700000000000-42", body)
	}
}

// BenchmarkCanonicalizeAndSignTransaction adds canonicalising the body.
func BenchmarkCanonicalizeAndSignTransaction(b *testing.B) {
	key := newKey(b, "bench")
	body := transaction55K(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		canonical, err := canonicaljson.Canonicalize(body)
		if err != nil {
			b.Fatal(err)
		}
		SignRequest(key, "example.org", "dest.example", "PUT", "/_matrix/federation/v1/send/1700000000000-42", canonical)
	}
}

// BenchmarkVerifyRequestTransaction is the receiver's side, for comparison.
func BenchmarkVerifyRequestTransaction(b *testing.B) {
	key := newKey(b, "bench")
	body := transaction55K(b)
	auth, err := ParseAuthorization(SignRequest(key, "example.org", "dest.example", "PUT", "/_matrix/federation/v1/send/1", body))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyRequest(key.Public(), auth, "PUT", "/_matrix/federation/v1/send/1", body); err != nil {
			b.Fatal(err)
		}
	}
}
