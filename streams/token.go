package streams

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
)

// ErrBadToken is returned by DecodeToken for text EncodeToken cannot produce.
var ErrBadToken = errors.New("streams: malformed destination token")

const hexDigits = "0123456789ABCDEF"

// EncodeToken maps any string (in practice a Matrix server name with dots,
// a port and perhaps an IPv6 literal) to a NATS subject token and KV key,
// losslessly: ASCII letters, digits and '-' stand for themselves, '.' becomes
// '_', and every other byte becomes '=' and two upper-case hex digits.
// "matrix.org:8448" becomes "matrix_org=3A8448"; "[::1]" becomes
// "=5B=3A=3A1=5D". The result matches [-_=A-Za-z0-9]+ (empty input gives "=").
func EncodeToken(s string) string {
	if s == "" {
		return "="
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '.':
			b.WriteByte('_')
		default:
			b.WriteByte('=')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xF])
		}
	}
	return b.String()
}

// DecodeToken reverses EncodeToken. It refuses any text EncodeToken would not
// produce, so each string has exactly one token.
func DecodeToken(tok string) (string, error) {
	if tok == "=" {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty", ErrBadToken)
	}
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		case c == '_':
			b.WriteByte('.')
		case c == '=':
			if i+2 >= len(tok) {
				return "", fmt.Errorf("%w: %q: truncated escape at byte %d", ErrBadToken, tok, i)
			}
			hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: %q: bad escape at byte %d", ErrBadToken, tok, i)
			}
			v := byte(hi<<4 | lo)
			if v >= 'a' && v <= 'z' || v >= 'A' && v <= 'Z' || v >= '0' && v <= '9' || v == '-' || v == '.' {
				return "", fmt.Errorf("%w: %q: needless escape at byte %d", ErrBadToken, tok, i)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("%w: %q: byte %q at %d", ErrBadToken, tok, c, i)
		}
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Partition returns the partition of a destination: FNV-1a (32 bit) of its
// token, modulo n. Every replica computes the same value.
func Partition(destination string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(EncodeToken(destination)))
	return int(h.Sum32() % uint32(n))
}
