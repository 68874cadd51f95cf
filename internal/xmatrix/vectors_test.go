package xmatrix

import (
	"encoding/base64"
	"testing"
)

// The test vectors of MATRIX.md section 2 (the spec's appendices and
// python-signedjson's tests).
const (
	specSeed      = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
	specKeyFile   = "ed25519 1 " + specSeed + "\n"
	specServer    = "domain"
	specKeyID     = "ed25519:1"
	specPublicKey = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
	specSigEmpty  = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
	specSigOneTwo = "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"

	vectorMethod      = "PUT"
	vectorURI         = "/_matrix/federation/v1/send/1"
	vectorOrigin      = "origin.example"
	vectorDestination = "dest.example"
	vectorContent     = `{"origin":"origin.example","origin_server_ts":1,"pdus":[]}`
	vectorCanonical   = `{"content":{"origin":"origin.example","origin_server_ts":1,"pdus":[]},"destination":"dest.example","method":"PUT","origin":"origin.example","uri":"/_matrix/federation/v1/send/1"}`
	vectorSig         = "jKTg0d4oXfGwH+BRX5g5ql3ozUJIsNbunBcIL0ETQZmjaNRoltukyaSwhi8dgHBaf7S2q5uBp01kaGQjF77dDg"
)

func specKey(t testing.TB) SigningKey {
	t.Helper()
	key, err := ParseKeyFile([]byte(specKeyFile))
	if err != nil {
		t.Fatalf("ParseKeyFile(spec seed): %v", err)
	}
	return key
}

func TestSpecKey(t *testing.T) {
	// The spec's seed has non-zero trailing bits: a strict decoder refuses
	// it, and ParseKeyFile must not.
	if _, err := base64.RawStdEncoding.Strict().DecodeString(specSeed); err == nil {
		t.Fatal("the strict decoder accepts the spec seed; the test no longer covers what it should")
	}
	key := specKey(t)
	if key.Version != "1" || key.KeyID() != specKeyID {
		t.Errorf("version %q, key id %q; want 1, %s", key.Version, key.KeyID(), specKeyID)
	}
	if got := base64.RawStdEncoding.EncodeToString(key.Public()); got != specPublicKey {
		t.Errorf("public key %s, want %s", got, specPublicKey)
	}
}

func TestSpecJSONSignatures(t *testing.T) {
	key := specKey(t)
	tests := []struct {
		name, object, sig, signed string
	}{
		{"empty object", `{}`, specSigEmpty,
			`{"signatures":{"domain":{"ed25519:1":"` + specSigEmpty + `"}}}`},
		{"one two", `{"one":1,"two":"Two"}`, specSigOneTwo,
			`{"one":1,"signatures":{"domain":{"ed25519:1":"` + specSigOneTwo + `"}},"two":"Two"}`},
		{"one two, unsorted with space", `{ "two": "Two", "one": 1 }`, specSigOneTwo,
			`{"one":1,"signatures":{"domain":{"ed25519:1":"` + specSigOneTwo + `"}},"two":"Two"}`},
		{"unsigned is not signed", `{"one":1,"two":"Two","unsigned":{"age_ts":1000000}}`, specSigOneTwo,
			`{"one":1,"signatures":{"domain":{"ed25519:1":"` + specSigOneTwo + `"}},"two":"Two","unsigned":{"age_ts":1000000}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			signed, err := SignJSON(specServer, key, []byte(tc.object))
			if err != nil {
				t.Fatalf("SignJSON: %v", err)
			}
			if string(signed) != tc.signed {
				t.Errorf("SignJSON\n got %s\nwant %s", signed, tc.signed)
			}
			if err := VerifyJSON(specServer, specKeyID, key.Public(), signed); err != nil {
				t.Errorf("VerifyJSON: %v", err)
			}
		})
	}
	if got := key.Sign([]byte(`{}`)); got != specSigEmpty {
		t.Errorf("Sign({}) = %s, want %s", got, specSigEmpty)
	}
	if got := key.Sign([]byte(`{"one":1,"two":"Two"}`)); got != specSigOneTwo {
		t.Errorf("Sign(one two) = %s, want %s", got, specSigOneTwo)
	}
}

func TestSpecRequestVector(t *testing.T) {
	key := specKey(t)
	got := RequestSigningBytes(vectorMethod, vectorURI, vectorOrigin, vectorDestination, []byte(vectorContent))
	if string(got) != vectorCanonical {
		t.Fatalf("RequestSigningBytes\n got %s\nwant %s", got, vectorCanonical)
	}
	if sig := key.Sign(got); sig != vectorSig {
		t.Errorf("signature %s, want %s", sig, vectorSig)
	}
	header := SignRequest(key, vectorOrigin, vectorDestination, vectorMethod, vectorURI, []byte(vectorContent))
	want := `X-Matrix origin="origin.example",destination="dest.example",key="ed25519:1",sig="` + vectorSig + `"`
	if header != want {
		t.Errorf("SignRequest\n got %s\nwant %s", header, want)
	}
	auth, err := ParseAuthorization(header)
	if err != nil {
		t.Fatalf("ParseAuthorization: %v", err)
	}
	// The receiver canonicalises the body it got, whatever its layout.
	body := []byte("{\n  \"pdus\": [],\n  \"origin_server_ts\": 1,\n  \"origin\": \"origin.example\"\n}")
	if err := VerifyRequest(key.Public(), auth, vectorMethod, vectorURI, body); err != nil {
		t.Errorf("VerifyRequest: %v", err)
	}
}
