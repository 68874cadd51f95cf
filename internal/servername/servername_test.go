package servername

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		host string
		port int
	}{
		{"example.org", "example.org", 0},
		{"example.org:8448", "example.org", 8448},
		{"EXAMPLE.org:1", "EXAMPLE.org", 1},
		{"matrix-1.example.org.", "matrix-1.example.org.", 0},
		{"localhost", "localhost", 0},
		{"a", "a", 0},
		{"1.2.3.4", "1.2.3.4", 0},
		{"1.2.3.4:1234", "1.2.3.4", 1234},
		{"255.255.255.255:65535", "255.255.255.255", 65535},
		{"[1234:5678::abcd]", "1234:5678::abcd", 0},
		{"[1234:5678::abcd]:5678", "1234:5678::abcd", 5678},
		{"[::1]", "::1", 0},
		{"[::ffff:1.2.3.4]:8448", "::ffff:1.2.3.4", 8448},
		{"[ABCD::EF]:443", "ABCD::EF", 443},
		{"example.org:08448", "example.org", 8448},
		{"1.2.3", "1.2.3", 0},           // not four groups: a dns-name
		{"1.2.3.4.5", "1.2.3.4.5", 0},   // not four groups: a dns-name
		{"1234.2.3.4", "1234.2.3.4", 0}, // a group of four digits: a dns-name
		{strings.Repeat("a", MaxLength), strings.Repeat("a", MaxLength), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := Split(tt.name)
			if err != nil {
				t.Fatalf("Split(%q): %v", tt.name, err)
			}
			if host != tt.host || port != tt.port {
				t.Errorf("Split(%q) = %q, %d; want %q, %d", tt.name, host, port, tt.host, tt.port)
			}
			if err := Validate(tt.name); err != nil {
				t.Errorf("Validate(%q): %v", tt.name, err)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name string
		why  string // a fragment the error must contain
	}{
		{"", "empty"},
		{":8448", "empty hostname"},
		{"example.org:", "empty port"},
		{"example.org:0", "not in 1-65535"},
		{"example.org:65536", "not in 1-65535"},
		{"example.org:99999", "not in 1-65535"},
		{"example.org:123456", "more than 5 digits"},
		{"example.org:+123", "not a decimal number"},
		{"example.org:-1", "not a decimal number"},
		{"example.org:12a", "not a decimal number"},
		{"example.org: 80", "not a decimal number"},
		{"example.org:80:80", "more than one ':'"},
		{"exa_mple.org", `contains '_'`},
		{"exa mple.org", `contains ' '`},
		{"example.org/path", `contains '/'`},
		{"user@example.org", `contains '@'`},
		{"ex\u00e4mple.org", "contains"},
		{"example.org\x00", "contains"},
		{"1.2.3.256", "not a valid IPv4 address"},
		{"999.1.1.1", "not a valid IPv4 address"},
		{"01.2.3.4", "not a valid IPv4 address"},
		{"::1", "must be in brackets"},
		{"1234:5678::abcd", "must be in brackets"},
		{"[::1", "without closing ']'"},
		{"[::1]x", "after IPv6 literal"},
		{"[::1]:", "empty port"},
		{"[::1]:0", "not in 1-65535"},
		{"[]", "2 to 45 characters"},
		{"[:]", "2 to 45 characters"},
		{"[1.2.3.4]", "not an IPv6 address"},
		{"[::g]", `contains 'g'`},
		{"[fe80::1%eth0]", `contains '%'`},
		{"[" + strings.Repeat("0", 46) + "]", "2 to 45 characters"},
		{"[::1]]", "after IPv6 literal"},
		{"a]", `contains ']'`},
		{strings.Repeat("a", MaxLength+1), "longer than 255"},
		{strings.Repeat("a", MaxLength-4) + ":8448", "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.name), func(t *testing.T) {
			err := Validate(tt.name)
			if err == nil {
				t.Fatalf("Validate(%q) = nil, want an error", tt.name)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate(%q) = %v, does not wrap ErrInvalid", tt.name, err)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("Validate(%q) = %q, want it to mention %q", tt.name, err, tt.why)
			}
			if host, port, err := Split(tt.name); err == nil || host != "" || port != 0 {
				t.Errorf("Split(%q) = %q, %d, %v; want zero values and an error", tt.name, host, port, err)
			}
		})
	}
}

func TestErrorTruncatesLongInput(t *testing.T) {
	err := Validate(strings.Repeat("x", 10_000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a 10 kB name should be short, got %d bytes: %v", len(err.Error()), err)
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"example.org", "example.org:8448", "1.2.3.4", "1.2.3.4:80", "[::1]", "[::1]:8448",
		"[::ffff:1.2.3.4]", "", ":", "[", "[]:", "a:0", "999.1.1.1", "[1.2.3.4]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		host, port, err := Split(name)
		if verr := Validate(name); (verr == nil) != (err == nil) {
			t.Fatalf("Validate and Split disagree on %q: %v vs %v", name, verr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Split(%q) error %v does not wrap ErrInvalid", name, err)
			}
			return
		}
		if len(name) > MaxLength || host == "" || port < 0 || port > 65535 {
			t.Fatalf("Split(%q) accepted bad input: %q, %d", name, host, port)
		}
		// The name must be the host, bracketed if it is IPv6, plus the port.
		rebuilt := host
		if strings.Contains(host, ":") {
			rebuilt = "[" + host + "]"
		}
		if port != 0 {
			if !strings.HasPrefix(name, rebuilt+":") {
				t.Fatalf("Split(%q) = %q, %d: host is not a prefix", name, host, port)
			}
			p, perr := strconv.Atoi(name[len(rebuilt)+1:])
			if perr != nil || p != port {
				t.Fatalf("Split(%q) = %q, %d: port does not match", name, host, port)
			}
		} else if rebuilt != name {
			t.Fatalf("Split(%q) = %q, 0: does not rebuild the name", name, host)
		}
	})
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"Matrix.ORG":         "matrix.org",
		"LOCALHOST:8448":     "localhost:8448",
		"[::ABCD]:443":       "[::abcd]:443",
		"1.2.3.4":            "1.2.3.4",
		"matrix.org:8448":    "matrix.org:8448",
		"Sub.Example-1.Test": "sub.example-1.test",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
