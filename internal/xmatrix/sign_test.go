package xmatrix

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

func newKey(t testing.TB, version string) SigningKey {
	t.Helper()
	key, err := GenerateKey(version)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return key
}

func TestRequestSigningBytesEscapes(t *testing.T) {
	got := RequestSigningBytes("GET", "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab&field=<x>\"\\é\u2028",
		"o.example", "d.example:8448", nil)
	want := "{\"destination\":\"d.example:8448\",\"method\":\"GET\",\"origin\":\"o.example\"," +
		"\"uri\":\"/_matrix/federation/v1/query/profile?user_id=%40a%3Ab&field=<x>\\\"\\\\é\u2028\"}"
	if string(got) != want {
		t.Errorf("RequestSigningBytes\n got %s\nwant %s", got, want)
	}
	if c, err := canonicaljson.Canonicalize(got); err != nil || string(c) != string(got) {
		t.Errorf("RequestSigningBytes output is not canonical: %s, %v", c, err)
	}
}

func TestVerifyRequestRejects(t *testing.T) {
	key := newKey(t, "k1")
	body := []byte(`{"pdus":[],"origin":"o.example","origin_server_ts":17}`)
	canonical, err := canonicaljson.Canonicalize(body)
	if err != nil {
		t.Fatal(err)
	}
	header := SignRequest(key, "o.example", "d.example", "PUT", "/_matrix/federation/v1/send/t1", canonical)
	auth, err := ParseAuthorization(header)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRequest(key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t1", body); err != nil {
		t.Fatalf("VerifyRequest of a good request: %v", err)
	}
	with := func(f func(*Authorization)) Authorization {
		a := auth
		f(&a)
		return a
	}
	otherKey := newKey(t, "k2").Public()
	tests := []struct {
		name         string
		pub          ed25519.PublicKey
		auth         Authorization
		method, uri  string
		body         string
		sentinel     error
		problemInErr string
	}{
		{"other method", key.Public(), auth, "POST", "/_matrix/federation/v1/send/t1", string(body), ErrBadSignature, "POST"},
		{"other uri", key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t2", string(body), ErrBadSignature, "/send/t2"},
		{"other body", key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t1", `{"pdus":[],"origin":"o.example","origin_server_ts":18}`, ErrBadSignature, "does not verify"},
		{"no body", key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t1", "", ErrBadSignature, "does not verify"},
		{"other origin", key.Public(), with(func(a *Authorization) { a.Origin = "evil.example" }), "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadSignature, "evil.example"},
		{"other destination", key.Public(), with(func(a *Authorization) { a.Destination = "x.example" }), "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadSignature, "does not verify"},
		{"other key", otherKey, auth, "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadSignature, "does not verify"},
		{"short public key", otherKey[:31], auth, "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadSignature, "public key is 31 bytes"},
		{"no destination", key.Public(), with(func(a *Authorization) { a.Destination = "" }), "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadAuthorization, "no destination"},
		{"sig not base64", key.Public(), with(func(a *Authorization) { a.Sig = "!!" }), "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadAuthorization, "not base64"},
		{"sig too short", key.Public(), with(func(a *Authorization) { a.Sig = a.Sig[:40] }), "PUT", "/_matrix/federation/v1/send/t1", string(body), ErrBadAuthorization, "30 bytes, want 64"},
		{"body with a float", key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t1", `{"a":1.5}`, canonicaljson.ErrInvalid, "floats"},
		{"body not JSON", key.Public(), auth, "PUT", "/_matrix/federation/v1/send/t1", `<html>`, canonicaljson.ErrInvalid, "request body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			if tc.body != "" {
				b = []byte(tc.body)
			}
			err := VerifyRequest(tc.pub, tc.auth, tc.method, tc.uri, b)
			assertErr(t, err, tc.sentinel, tc.problemInErr)
		})
	}
}

func TestVerifyRequestWithoutBody(t *testing.T) {
	key := newKey(t, "k1")
	uri := "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ab"
	auth, err := ParseAuthorization(SignRequest(key, "o.example", "d.example", "GET", uri, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range [][]byte{nil, {}} {
		if err := VerifyRequest(key.Public(), auth, "GET", uri, body); err != nil {
			t.Errorf("VerifyRequest(body %q): %v", body, err)
		}
	}
	assertErr(t, VerifyRequest(key.Public(), auth, "GET", uri, []byte(`{}`)), ErrBadSignature, "does not verify")
}

func TestSignJSONKeepsOtherSignatures(t *testing.T) {
	key := newKey(t, "mine")
	in := `{"content":{"b":1},"signatures":{"other.example":{"ed25519:x":"c2lnbmF0dXJl"},` +
		`"me.example":{"ed25519:old":"b2xk","ed25519:mine":"c3RhbGU"}},"unsigned":{"age":5}}`
	signed, err := SignJSON("me.example", key, []byte(in))
	if err != nil {
		t.Fatalf("SignJSON: %v", err)
	}
	var got struct {
		Content    json.RawMessage
		Signatures map[string]map[string]string
		Unsigned   json.RawMessage
	}
	if err := json.Unmarshal(signed, &got); err != nil {
		t.Fatal(err)
	}
	if got.Signatures["other.example"]["ed25519:x"] != "c2lnbmF0dXJl" || got.Signatures["me.example"]["ed25519:old"] != "b2xk" {
		t.Errorf("other signatures lost: %s", signed)
	}
	if s := got.Signatures["me.example"]["ed25519:mine"]; s == "c3RhbGU" || s == "" {
		t.Errorf("own signature not replaced: %s", signed)
	}
	if string(got.Unsigned) != `{"age":5}` {
		t.Errorf("unsigned not kept: %s", signed)
	}
	if c, err := canonicaljson.Canonicalize(signed); err != nil || string(c) != string(signed) {
		t.Errorf("SignJSON output is not canonical: %s", signed)
	}
	want := key.Sign([]byte(`{"content":{"b":1}}`))
	if s := got.Signatures["me.example"]["ed25519:mine"]; s != want {
		t.Errorf("signature %s, want one over the object without signatures and unsigned (%s)", s, want)
	}
	// Unsigned data may change in transit; signatures of others may be added.
	changed := strings.Replace(string(signed), `{"age":5}`, `{"age":6000}`, 1)
	changed = strings.Replace(changed, `"signatures":{`, `"signatures":{"third.example":{"ed25519:z":"eHl6"},`, 1)
	if err := VerifyJSON("me.example", "ed25519:mine", key.Public(), []byte(changed)); err != nil {
		t.Errorf("VerifyJSON after changing unsigned and adding a signature: %v", err)
	}
}

func TestVerifyJSONRejects(t *testing.T) {
	key := newKey(t, "v1")
	signed, err := SignJSON("me.example", key, []byte(`{"a":"x","n":9007199254740991}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, server, keyID, object string
		pub                         ed25519.PublicKey
		sentinel                    error
		problem                     string
	}{
		{"changed content", "me.example", "ed25519:v1", strings.Replace(string(signed), `"x"`, `"y"`, 1), key.Public(), ErrBadSignature, "by me.example with key ed25519:v1"},
		{"other server", "you.example", "ed25519:v1", string(signed), key.Public(), ErrBadSignature, "no signature by you.example"},
		{"other key id", "me.example", "ed25519:v2", string(signed), key.Public(), ErrBadSignature, "no signature by me.example with key ed25519:v2"},
		{"other public key", "me.example", "ed25519:v1", string(signed), newKey(t, "v2").Public(), ErrBadSignature, "does not verify"},
		{"no signatures", "me.example", "ed25519:v1", `{"a":"x"}`, key.Public(), ErrBadSignature, "no signature"},
		{"signature not a string", "me.example", "ed25519:v1", `{"signatures":{"me.example":{"ed25519:v1":5}}}`, key.Public(), ErrBadSignature, "not a string"},
		{"signature not base64", "me.example", "ed25519:v1", `{"signatures":{"me.example":{"ed25519:v1":"%%"}}}`, key.Public(), ErrBadSignature, "not base64"},
		{"signatures not objects", "me.example", "ed25519:v1", `{"signatures":{"me.example":"x"}}`, key.Public(), canonicaljson.ErrInvalid, "signatures is not an object of objects"},
		{"not an object", "me.example", "ed25519:v1", `[1]`, key.Public(), canonicaljson.ErrInvalid, "not a JSON object"},
		{"float", "me.example", "ed25519:v1", `{"a":0.5}`, key.Public(), canonicaljson.ErrInvalid, "floats"},
		{"bad public key", "me.example", "ed25519:v1", string(signed), nil, ErrBadSignature, "public key is 0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertErr(t, VerifyJSON(tc.server, tc.keyID, tc.pub, []byte(tc.object)), tc.sentinel, tc.problem)
		})
	}
}

func TestSignJSONErrors(t *testing.T) {
	key := newKey(t, "v1")
	tests := []struct {
		name, object string
		key          SigningKey
		sentinel     error
		problem      string
	}{
		{"array", `[]`, key, canonicaljson.ErrInvalid, "not a JSON object"},
		{"duplicate key", `{"a":1,"a":2}`, key, canonicaljson.ErrInvalid, "duplicate object key"},
		{"null signatures", `{"signatures":null}`, key, canonicaljson.ErrInvalid, "signatures is not an object"},
		{"null signatures of a server", `{"signatures":{"x":null}}`, key, canonicaljson.ErrInvalid, `signatures of "x" is not an object`},
		{"zero key", `{}`, SigningKey{Version: "v1"}, ErrBadKeyID, "private key is 0 bytes"},
		{"bad version", `{}`, SigningKey{Version: "v:1", Private: key.Private}, ErrBadKeyID, "key version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SignJSON("me.example", tc.key, []byte(tc.object))
			assertErr(t, err, tc.sentinel, tc.problem)
		})
	}
}

func TestServerKeys(t *testing.T) {
	key := newKey(t, "a_Bc1")
	validUntil := time.UnixMilli(1_700_000_000_123)
	body, err := ServerKeys("me.example:8448", key, validUntil)
	if err != nil {
		t.Fatalf("ServerKeys: %v", err)
	}
	var got struct {
		ServerName    string                          `json:"server_name"`
		ValidUntilTS  int64                           `json:"valid_until_ts"`
		VerifyKeys    map[string]struct{ Key string } `json:"verify_keys"`
		OldVerifyKeys map[string]json.RawMessage      `json:"old_verify_keys"`
		Signatures    map[string]map[string]string    `json:"signatures"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	pub := base64.RawStdEncoding.EncodeToString(key.Public())
	if got.ServerName != "me.example:8448" || got.ValidUntilTS != 1_700_000_000_123 ||
		got.VerifyKeys["ed25519:a_Bc1"].Key != pub || got.OldVerifyKeys == nil || len(got.OldVerifyKeys) != 0 ||
		got.Signatures["me.example:8448"]["ed25519:a_Bc1"] == "" {
		t.Errorf("ServerKeys = %s", body)
	}
	if c, err := canonicaljson.Canonicalize(body); err != nil || string(c) != string(body) {
		t.Errorf("ServerKeys output is not canonical: %s", body)
	}
	if err := VerifyJSON("me.example:8448", "ed25519:a_Bc1", key.Public(), body); err != nil {
		t.Errorf("VerifyJSON(ServerKeys): %v", err)
	}
	_, err = ServerKeys("me.example", key, time.Time{})
	assertErr(t, err, canonicaljson.ErrInvalid, "valid_until_ts")
}
