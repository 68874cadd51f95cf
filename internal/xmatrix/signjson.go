package xmatrix

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

// SignJSON adds signatures[serverName][key id] to a JSON object, signing its
// canonical form without "signatures" and "unsigned", and returns the
// canonical signed object.
//
// Signatures already there, of other servers or other keys of this server,
// are kept; one by the same key is replaced. "unsigned" is kept in the
// result, as signedjson's sign_json does. Input that is not a JSON object
// acceptable to canonicaljson gives an error wrapping canonicaljson.ErrInvalid.
func SignJSON(serverName string, key SigningKey, object []byte) ([]byte, error) {
	if err := key.validate(); err != nil {
		return nil, err
	}
	members, err := parseObject(object)
	if err != nil {
		return nil, fmt.Errorf("xmatrix: SignJSON: %w", err)
	}
	sigs, err := parseSignatures(members)
	if err != nil {
		return nil, fmt.Errorf("xmatrix: SignJSON: %w", err)
	}
	sig := key.Sign(signedBytes(members))
	if sigs[serverName] == nil {
		sigs[serverName] = map[string]json.RawMessage{}
	}
	sigs[serverName][key.KeyID()] = canonicaljson.AppendString(nil, sig)
	rendered := make(map[string]json.RawMessage, len(sigs))
	for server, byKey := range sigs {
		rendered[server] = appendObject(nil, byKey)
	}
	members["signatures"] = appendObject(nil, rendered)
	return appendObject(nil, members), nil
}

// VerifyJSON checks signatures[serverName][keyID] of a JSON object.
func VerifyJSON(serverName, keyID string, pub ed25519.PublicKey, object []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	members, err := parseObject(object)
	if err != nil {
		return fmt.Errorf("xmatrix: VerifyJSON: %w", err)
	}
	sigs, err := parseSignatures(members)
	if err != nil {
		return fmt.Errorf("xmatrix: VerifyJSON: %w", err)
	}
	raw, ok := sigs[serverName][keyID]
	if !ok {
		return fmt.Errorf("%w: no signature by %s with key %s", ErrBadSignature, serverName, keyID)
	}
	var b64 string
	if err := json.Unmarshal(raw, &b64); err != nil {
		return fmt.Errorf("%w: signature by %s with key %s is not a string", ErrBadSignature, serverName, keyID)
	}
	sig, err := decodeSignature(b64)
	if err != nil {
		return fmt.Errorf("%w: signature by %s with key %s: %w", ErrBadSignature, serverName, keyID, err)
	}
	if !ed25519.Verify(pub, signedBytes(members), sig) {
		return fmt.Errorf("%w: by %s with key %s", ErrBadSignature, serverName, keyID)
	}
	return nil
}

// parseObject canonicalises a JSON object and splits it into its members,
// whose values stay canonical JSON.
func parseObject(object []byte) (map[string]json.RawMessage, error) {
	canonical, err := canonicaljson.Canonicalize(object)
	if err != nil {
		return nil, err
	}
	if canonical[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", canonicaljson.ErrInvalid)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(canonical, &members); err != nil {
		return nil, fmt.Errorf("%w: %w", canonicaljson.ErrInvalid, err)
	}
	return members, nil
}

// parseSignatures reads the "signatures" member, server name to key id to
// value; values other than ours are kept as they are.
func parseSignatures(members map[string]json.RawMessage) (map[string]map[string]json.RawMessage, error) {
	sigs := map[string]map[string]json.RawMessage{}
	if raw, ok := members["signatures"]; ok {
		if err := json.Unmarshal(raw, &sigs); err != nil || sigs == nil {
			return nil, fmt.Errorf("%w: signatures is not an object of objects", canonicaljson.ErrInvalid)
		}
		for server, byKey := range sigs {
			if byKey == nil {
				return nil, fmt.Errorf("%w: signatures of %q is not an object", canonicaljson.ErrInvalid, server)
			}
		}
	}
	return sigs, nil
}

// signedBytes is the canonical object without "signatures" and "unsigned".
func signedBytes(members map[string]json.RawMessage) []byte {
	return appendObject(nil, members, "signatures", "unsigned")
}

// appendObject writes members as a canonical object, leaving out skip.
// Values must be canonical already. Go's string order is byte order, which
// for UTF-8 is code point order.
func appendObject(dst []byte, members map[string]json.RawMessage, skip ...string) []byte {
	keys := make([]string, 0, len(members))
	size := 2
	for k, v := range members {
		if !slices.Contains(skip, k) {
			keys = append(keys, k)
			size += len(k) + len(v) + 4
		}
	}
	slices.Sort(keys)
	dst = slices.Grow(dst, size)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = canonicaljson.AppendString(dst, k)
		dst = append(dst, ':')
		dst = append(dst, members[k]...)
	}
	return append(dst, '}')
}
