package xmatrix

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyFile(t *testing.T) {
	other := "ed25519 b " + base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	tests := []struct {
		name, file, version string
	}{
		{"synapse file", specKeyFile, "1"},
		{"no trailing newline", "ed25519 1 " + specSeed, "1"},
		{"CRLF", "ed25519 1 " + specSeed + "\r\n", "1"},
		{"padded seed", "ed25519 1 " + specSeed + "=\n", "1"},
		{"extra white space", "  ed25519\t1   " + specSeed + "  \n", "1"},
		{"blank lines and comment first", "\n# fedsender key\n\ned25519 1 " + specSeed + "\n", "1"},
		{"first ed25519 line wins", specKeyFile + other + "\n", "1"},
		{"other algorithm skipped", "curve448 x AAAA\n" + specKeyFile, "1"},
		{"synapse style version", "ed25519 a_XKzK " + specSeed, "a_XKzK"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ParseKeyFile([]byte(tc.file))
			if err != nil {
				t.Fatalf("ParseKeyFile: %v", err)
			}
			if key.Version != tc.version {
				t.Errorf("version %q, want %q", key.Version, tc.version)
			}
			if got := base64.RawStdEncoding.EncodeToString(key.Public()); got != specPublicKey {
				t.Errorf("public key %s, want %s", got, specPublicKey)
			}
		})
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	shortSeed := base64.RawStdEncoding.EncodeToString(make([]byte, 31))
	tests := []struct {
		name, file, problem string
		alsoIs              error
	}{
		{"empty", "", "no line", nil},
		{"only comments", "# nothing\n\n", "no line", nil},
		{"two fields", "ed25519 1\n", "line 1: want \"ed25519 <version> <base64 seed>\", got 2 fields", nil},
		{"four fields", "ed25519 1 " + specSeed + " 12345\n", "got 4 fields", nil},
		{"not base64", "\ned25519 1 not!base64!at!all!\n", "line 2: seed is not base64", nil},
		{"short seed", "ed25519 1 " + shortSeed, "seed is 31 bytes, want 32", nil},
		{"bad version", "ed25519 a:b " + specSeed, `key version "a:b" has ':'`, ErrBadKeyID},
		{"first ed25519 line is bad", "ed25519 1 AAAA\n" + specKeyFile, "seed is 3 bytes", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyFile([]byte(tc.file))
			assertErr(t, err, ErrBadKeyFile, tc.problem)
			if tc.alsoIs != nil && !errors.Is(err, tc.alsoIs) {
				t.Errorf("error %v does not wrap %v", err, tc.alsoIs)
			}
			// A key file is a secret: no error may repeat it.
			if strings.Contains(err.Error(), specSeed[:10]) || strings.Contains(err.Error(), "not!base64") {
				t.Errorf("error %q quotes the seed", err)
			}
		})
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.signing.key")
	if err := os.WriteFile(path, []byte(specKeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := LoadKeyFile(path)
	if err != nil {
		t.Fatalf("LoadKeyFile: %v", err)
	}
	if key.KeyID() != specKeyID {
		t.Errorf("key id %s, want %s", key.KeyID(), specKeyID)
	}

	_, err = LoadKeyFile(filepath.Join(dir, "missing.key"))
	assertErr(t, err, ErrBadKeyFile, "missing.key")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("ed25519 1 AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadKeyFile(bad)
	assertErr(t, err, ErrBadKeyFile, bad+": line 1: seed is 3 bytes")
}

func TestGenerateAndMarshalKey(t *testing.T) {
	key, err := GenerateKey("a_Xy9")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	file := key.MarshalKeyFile()
	if !bytes.HasPrefix(file, []byte("ed25519 a_Xy9 ")) || !bytes.HasSuffix(file, []byte("\n")) ||
		bytes.Contains(file, []byte("=")) || bytes.Count(file, []byte("\n")) != 1 {
		t.Errorf("MarshalKeyFile = %q, want one line \"ed25519 a_Xy9 <unpadded seed>\\n\"", file)
	}
	back, err := ParseKeyFile(file)
	if err != nil {
		t.Fatalf("ParseKeyFile(MarshalKeyFile()): %v", err)
	}
	if back.Version != key.Version || !back.Private.Equal(key.Private) {
		t.Errorf("round trip changed the key")
	}
	if got := specKey(t).MarshalKeyFile(); string(got) != "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n" {
		// Re-encoding clears the spec seed's stray trailing bits.
		t.Errorf("MarshalKeyFile(spec key) = %q", got)
	}

	for _, version := range []string{"", "a:b", "a b", "é", `a"`} {
		_, err := GenerateKey(version)
		assertErr(t, err, ErrBadKeyID, "key version")
	}
}

// assertErr checks that err wraps sentinel and mentions problem.
func assertErr(t *testing.T, err, sentinel error, problem string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one wrapping %v about %q", sentinel, problem)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), problem) {
		t.Errorf("error %q does not say %q", err, problem)
	}
}
