package canonicaljson

import (
	"strings"
	"testing"
)

// pdu is a room event as a homeserver hands it over: about 1 KiB, keys in
// the order Python's dict kept them, some escapes and non-ASCII text.
const pdu = `{
    "type": "m.room.message",
    "room_id": "!OGEhHVWSdvArJzumhm:matrix.org",
    "sender": "@alice:example.org",
    "content": {
        "msgtype": "m.text",
        "body": "Hello, world! \u00e9t\u00e9 \ud83d\ude00 <b>bold</b> & \"quotes\"\nsecond line",
        "format": "org.matrix.custom.html",
        "formatted_body": "Hello, <b>world</b>! été 😀",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"}}
    },
    "depth": 123456,
    "origin": "example.org",
    "origin_server_ts": 1700000000000,
    "prev_events": ["$1wDbgbqasIMaxbA0AkrsM1gj3Yb5JgmTcKTB44g3q4o", "$Ldb4EQs6tNxLChC8pTm6rdRGUdXnhzOuZg0nuDSDUZk"],
    "auth_events": [
        "$oQz2hOl9o0wWs2P2hbkQDQvhBFQwVz7i6ciwgNL4AUY",
        "$X6ihiUnQOP1wzZJU2YQ0BUzJ4d8IQhD4uO3jdGBRxHE",
        "$Cd7F9Iu4rKMf0Fg6hGzEaT9GkV3R5o7DnXlcrs5LwNE"
    ],
    "hashes": {"sha256": "ZBnDBlC0MaLVN0UsBEF5wKWA3UAs/9A7L7wJVgkMqG0"},
    "signatures": {
        "example.org": {"ed25519:a_XKzK": "mDkdrmQBeGO6wdWWyoHrzIBz0hPIrrdAgUwOv9BjUDE8xzhqZc4dWcSr5UK0AvQQnJ7JLS9Pe4y5dv/U/YzIAg"}
    },
    "unsigned": {"age_ts": 1700000000000, "replaces_state": null}
}`

func BenchmarkCanonicalizePDU(b *testing.B) {
	src := []byte(pdu)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	dst := make([]byte, 0, len(src))
	for b.Loop() {
		var err error
		if dst, err = Append(dst[:0], src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalizeCanonicalPDU is the common case of re-checking bytes
// that are already canonical.
func BenchmarkCanonicalizeCanonicalPDU(b *testing.B) {
	src, err := Canonicalize([]byte(pdu))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	dst := make([]byte, 0, len(src))
	for b.Loop() {
		if dst, err = Append(dst[:0], src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalizeTransaction is a full transaction of 50 PDUs.
func BenchmarkCanonicalizeTransaction(b *testing.B) {
	src := []byte(`{"origin":"example.org","origin_server_ts":1700000000000,"pdus":[` +
		strings.TrimSuffix(strings.Repeat(pdu+",", 50), ",") + `]}`)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Canonicalize(src); err != nil {
			b.Fatal(err)
		}
	}
}
