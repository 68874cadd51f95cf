package xmatrix

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// algorithm is the only signing algorithm Matrix uses.
const algorithm = "ed25519"

// SigningKey is one ed25519 signing key of a server.
type SigningKey struct {
	Version string // the part after "ed25519:" in the key id
	Private ed25519.PrivateKey
}

// KeyID is "ed25519:" + Version.
func (k SigningKey) KeyID() string { return algorithm + ":" + k.Version }

// Public returns the public half of the key. k must hold a whole private key.
func (k SigningKey) Public() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

// Sign signs canonical bytes and returns the unpadded base64 signature. k
// must hold a whole private key (ed25519.Sign panics otherwise).
func (k SigningKey) Sign(canonical []byte) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.Private, canonical))
}

// validate reports a key that Sign would panic on or whose id cannot be sent.
func (k SigningKey) validate() error {
	if err := validateVersion(k.Version); err != nil {
		return err
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: private key is %d bytes, want %d", ErrBadKeyID, len(k.Private), ed25519.PrivateKeySize)
	}
	return nil
}

// GenerateKey makes a new key with the given version.
func GenerateKey(version string) (SigningKey, error) {
	if err := validateVersion(version); err != nil {
		return SigningKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("xmatrix: generate key: %w", err)
	}
	return SigningKey{Version: version, Private: priv}, nil
}

// validateVersion keeps key ids to the spec's [A-Za-z0-9_], which also keeps
// them safe inside an Authorization header.
func validateVersion(version string) error {
	if version == "" {
		return fmt.Errorf("%w: empty key version", ErrBadKeyID)
	}
	for i := 0; i < len(version); i++ {
		c := version[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return fmt.Errorf("%w: key version %q has %q, want only [A-Za-z0-9_]", ErrBadKeyID, version, c)
		}
	}
	return nil
}

// ParseKeyFile reads Synapse's format: a line "ed25519 <version> <unpadded base64 seed>".
//
// Blank lines, lines starting with '#' and lines for other algorithms are
// skipped; the first ed25519 line is the key, as Synapse uses the first key of
// its file. The seed may be padded, and its unused trailing bits need not be
// zero (Python's base64 does not check them, and the spec's test seed has
// them set). Errors never quote the seed.
func ParseKeyFile(data []byte) (SigningKey, error) {
	return parseKeyFile("", data)
}

// LoadKeyFile reads and parses a key file.
func LoadKeyFile(path string) (SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SigningKey{}, fmt.Errorf("%w: %w", ErrBadKeyFile, err)
	}
	return parseKeyFile(path, data)
}

func parseKeyFile(name string, data []byte) (SigningKey, error) {
	where := func(line int) string {
		if name == "" {
			return fmt.Sprintf("line %d", line)
		}
		return fmt.Sprintf("%s: line %d", name, line)
	}
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != algorithm {
			continue // blank, comment, or another algorithm
		}
		if len(fields) != 3 {
			return SigningKey{}, fmt.Errorf("%w: %s: want \"ed25519 <version> <base64 seed>\", got %d fields",
				ErrBadKeyFile, where(i+1), len(fields))
		}
		if err := validateVersion(fields[1]); err != nil {
			return SigningKey{}, fmt.Errorf("%w: %s: %w", ErrBadKeyFile, where(i+1), err)
		}
		seed, err := decodeBase64(fields[2])
		if err != nil {
			return SigningKey{}, fmt.Errorf("%w: %s: seed is not base64", ErrBadKeyFile, where(i+1))
		}
		if len(seed) != ed25519.SeedSize {
			return SigningKey{}, fmt.Errorf("%w: %s: seed is %d bytes, want %d",
				ErrBadKeyFile, where(i+1), len(seed), ed25519.SeedSize)
		}
		return SigningKey{Version: fields[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
	}
	if name == "" {
		return SigningKey{}, fmt.Errorf("%w: no line \"ed25519 <version> <base64 seed>\"", ErrBadKeyFile)
	}
	return SigningKey{}, fmt.Errorf("%w: %s: no line \"ed25519 <version> <base64 seed>\"", ErrBadKeyFile, name)
}

// MarshalKeyFile renders the key in Synapse's format, with a trailing newline.
func (k SigningKey) MarshalKeyFile() []byte {
	return []byte(algorithm + " " + k.Version + " " + base64.RawStdEncoding.EncodeToString(k.Private.Seed()) + "\n")
}

// decodeBase64 reads standard base64 with or without padding, as Matrix's
// unpadded base64 decoders do.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
