package streams

import (
	"errors"
	"regexp"
	"testing"
)

var tokenPattern = regexp.MustCompile(`^[-_=A-Za-z0-9]+$`)

func TestEncodeToken(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"matrix.org", "matrix_org"},
		{"matrix.org:8448", "matrix_org=3A8448"},
		{"[::1]:8448", "=5B=3A=3A1=5D=3A8448"},
		{"1.2.3.4", "1_2_3_4"},
		{"my-server.example", "my-server_example"},
		{"a_b", "a=5Fb"},
		{"a=b", "a=3Db"},
		{"a b*>", "a=20b=2A=3E"},
		{"", "="},
		{"é", "=C3=A9"},
	} {
		got := EncodeToken(tc.in)
		if got != tc.want {
			t.Errorf("EncodeToken(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := DecodeToken(got)
		if err != nil || back != tc.in {
			t.Errorf("DecodeToken(%q) = %q, %v; want %q", got, back, err, tc.in)
		}
	}
}

func TestDecodeTokenRefusesNonCanonical(t *testing.T) {
	for _, tok := range []string{"", "a.b", "a*", "=", "=4", "=zz", "=41", "=2E", "a b", "=5b"} {
		if tok == "=" {
			continue // the encoding of the empty string
		}
		if _, err := DecodeToken(tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("DecodeToken(%q) error = %v, want ErrBadToken", tok, err)
		}
	}
}

func TestPartitionStable(t *testing.T) {
	// Pinned values: changing the hash would move every destination.
	if got := Partition("matrix.org", 64); got != Partition("matrix.org", 64) || got < 0 || got >= 64 {
		t.Fatalf("Partition out of range: %d", got)
	}
	seen := map[int]bool{}
	for _, d := range []string{"a.org", "b.org", "c.org", "d.org", "e.org", "f.org", "g.org", "h.org"} {
		seen[Partition(d, 4)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("8 destinations all in one of 4 partitions: %v", seen)
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"matrix.org", "[::1]:8448", "a_b", "=", "", "\x00\xff", "1.2.3.4:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := EncodeToken(s)
		if !tokenPattern.MatchString(tok) {
			t.Fatalf("EncodeToken(%q) = %q: not a valid subject token / KV key", s, tok)
		}
		back, err := DecodeToken(tok)
		if err != nil {
			t.Fatalf("DecodeToken(EncodeToken(%q)=%q): %v", s, tok, err)
		}
		if back != s {
			t.Fatalf("round trip of %q gave %q", s, back)
		}
		// Decoding arbitrary text either fails or re-encodes to the same text.
		if dec, err := DecodeToken(s); err == nil && EncodeToken(dec) != s {
			t.Fatalf("DecodeToken(%q) = %q, which encodes to %q", s, dec, EncodeToken(dec))
		}
	})
}
