package xmatrix

import (
	"crypto/ed25519"
	"fmt"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

// RequestSigningBytes returns the canonical JSON that X-Matrix signs:
// {"content":...,"destination":...,"method":...,"origin":...,"uri":...}.
// canonicalContent must already be canonical JSON, or nil for no body.
//
// The object is concatenated rather than encoded: the keys are written in
// their sorted order, so a 50-PDU transaction costs one copy.
func RequestSigningBytes(method, uri, origin, destination string, canonicalContent []byte) []byte {
	b := make([]byte, 0, len(canonicalContent)+len(method)+len(uri)+len(origin)+len(destination)+64)
	b = append(b, '{')
	if len(canonicalContent) > 0 {
		b = append(b, `"content":`...)
		b = append(b, canonicalContent...)
		b = append(b, ',')
	}
	b = append(b, `"destination":`...)
	b = canonicaljson.AppendString(b, destination)
	b = append(b, `,"method":`...)
	b = canonicaljson.AppendString(b, method)
	b = append(b, `,"origin":`...)
	b = canonicaljson.AppendString(b, origin)
	b = append(b, `,"uri":`...)
	b = canonicaljson.AppendString(b, uri)
	return append(b, '}')
}

// SignRequest signs a request and returns its Authorization header value.
// uri is the path from /_matrix on, with its query string, exactly as sent.
func SignRequest(key SigningKey, origin, destination, method, uri string, canonicalContent []byte) string {
	sig := key.Sign(RequestSigningBytes(method, uri, origin, destination, canonicalContent))
	return Authorization{Origin: origin, Destination: destination, KeyID: key.KeyID(), Sig: sig}.String()
}

// VerifyRequest checks a request's Authorization against the origin's public
// key. body is the raw request body (nil for none); it is canonicalised here.
//
// The signed destination is auth.Destination: a receiver whose peer left the
// parameter out (before Matrix 1.3) sets it to its own server name first, and
// one that got it checks that it names itself. auth.KeyID is not looked at:
// the caller picks pub by it.
func VerifyRequest(pub ed25519.PublicKey, auth Authorization, method, uri string, body []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	if auth.Destination == "" {
		return fmt.Errorf("%w: no destination (set it to this server's name)", ErrBadAuthorization)
	}
	sig, err := decodeSignature(auth.Sig)
	if err != nil {
		return fmt.Errorf("%w: sig: %w", ErrBadAuthorization, err)
	}
	var content []byte
	if len(body) > 0 {
		if content, err = canonicaljson.Canonicalize(body); err != nil {
			return fmt.Errorf("xmatrix: request body: %w", err)
		}
	}
	if !ed25519.Verify(pub, RequestSigningBytes(method, uri, auth.Origin, auth.Destination, content), sig) {
		return fmt.Errorf("%w: %s %s from %s with key %s", ErrBadSignature, method, uri, auth.Origin, auth.KeyID)
	}
	return nil
}

// decodeSignature reads a base64 ed25519 signature.
func decodeSignature(s string) ([]byte, error) {
	sig, err := decodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %q", truncate(s))
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	return sig, nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
