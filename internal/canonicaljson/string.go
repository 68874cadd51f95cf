package canonicaljson

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
)

// plain marks the bytes a canonical string holds as themselves: printable
// ASCII other than '"' and '\\'. Bytes from 0x80 up are UTF-8, checked apart.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendString appends s as a canonical JSON string, with its quotes. Bytes
// that are not valid UTF-8 are written as U+FFFD, so callers that must not
// lose data validate s first.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, "\uFFFD"...)
				i++
				start = i
				continue
			}
			i += n
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = appendEscapedASCII(dst, c)
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendEscapedASCII writes '"', '\\' or a control character escaped.
func appendEscapedASCII(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// allPlain reports whether the eight bytes in x are all plain, with the
// classic SWAR tests: no byte below 0x20, none with the top bit set, none equal
// to '"' or '\\'. The tests have no false negatives.
func allPlain(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	special := (x - ones*0x20) & ^x & highs // bytes below 0x20 (and some 0x80+)
	special |= x & highs
	special |= hasZero(x ^ ones*'"')
	special |= hasZero(x ^ ones*'\\')
	return special == 0
}

// validRuneAt returns the length of the valid UTF-8 sequence at src[i], or 0.
// utf8.DecodeRune already rejects surrogates, overlong forms and values above
// U+10FFFF.
func validRuneAt(src []byte, i int) int {
	r, n := utf8.DecodeRune(src[i:])
	if r == utf8.RuneError && n == 1 {
		return 0
	}
	return n
}

// str copies the string at s.pos canonically. escaped reports whether the
// input had escapes, i.e. whether the decoded string differs from the bytes
// between the quotes.
func (s *state) str(dst []byte) (_ []byte, escaped bool, _ error) {
	src := s.src
	start := s.pos
	i := start + 1
	for i < len(src) {
		// Skip eight plain bytes at a time; most of a PDU is in strings.
		for len(src)-i >= 8 && allPlain(binary.LittleEndian.Uint64(src[i:])) {
			i += 8
		}
		if i >= len(src) {
			break
		}
		c := src[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.pos = i + 1
			return append(dst, src[start:i+1]...), false, nil
		case c == '\\':
			dst = append(dst, src[start:i]...)
			dst, err := s.escapedStr(dst, i)
			return dst, true, err
		case c < 0x20:
			return dst, false, s.controlChar(i)
		}
		n := validRuneAt(src, i)
		if n == 0 {
			return dst, false, s.fail(i, "invalid UTF-8 in string")
		}
		i += n
	}
	return dst, false, s.fail(len(src), "unexpected end of input in string")
}

// escapedStr continues a string from its first backslash at src[i], the
// opening quote and any plain run before it already written.
func (s *state) escapedStr(dst []byte, i int) ([]byte, error) {
	src := s.src
	for {
		run := i
		for i < len(src) {
			c := src[i]
			if plain[c] {
				i++
				continue
			}
			if c < utf8.RuneSelf {
				break
			}
			n := validRuneAt(src, i)
			if n == 0 {
				return dst, s.fail(i, "invalid UTF-8 in string")
			}
			i += n
		}
		dst = append(dst, src[run:i]...)
		if i >= len(src) {
			return dst, s.fail(len(src), "unexpected end of input in string")
		}
		switch c := src[i]; {
		case c == '"':
			s.pos = i + 1
			return append(dst, '"'), nil
		case c < 0x20:
			return dst, s.controlChar(i)
		}
		// A backslash.
		if i+1 >= len(src) {
			return dst, s.fail(len(src), "unexpected end of input in string")
		}
		switch e := src[i+1]; e {
		case '"', '\\':
			dst = append(dst, '\\', e)
		case '/':
			dst = append(dst, '/')
		case 'b', 'f', 'n', 'r', 't':
			dst = append(dst, '\\', e)
		case 'u':
			r, n, err := s.unicodeEscape(i)
			if err != nil {
				return dst, err
			}
			if r < utf8.RuneSelf {
				if plain[r] {
					dst = append(dst, byte(r))
				} else {
					dst = appendEscapedASCII(dst, byte(r))
				}
			} else {
				dst = utf8.AppendRune(dst, r)
			}
			i += n
			continue
		default:
			return dst, s.fail(i, "invalid escape sequence "+strconv.Quote(string(src[i:i+2])))
		}
		i += 2
	}
}

// unicodeEscape decodes \uXXXX at src[i], or a surrogate pair \uXXXX\uXXXX,
// and returns the rune and the number of bytes read.
func (s *state) unicodeEscape(i int) (rune, int, error) {
	r, ok := hex4(s.src, i+2)
	if !ok {
		return 0, 0, s.fail(i, "invalid \\u escape, expected four hex digits")
	}
	switch {
	case r < 0xd800 || r > 0xdfff:
		return r, 6, nil
	case r >= 0xdc00:
		return 0, 0, s.fail(i, "lone low surrogate "+strconv.Quote(string(s.src[i:i+6]))+" in string")
	}
	lo, ok := rune(0), false
	if i+7 < len(s.src) && s.src[i+6] == '\\' && s.src[i+7] == 'u' {
		lo, ok = hex4(s.src, i+8)
	}
	if !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0, 0, s.fail(i, "lone high surrogate "+strconv.Quote(string(s.src[i:i+6]))+" in string")
	}
	return 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00), 12, nil
}

func hex4(src []byte, i int) (rune, bool) {
	if len(src)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range src[i : i+4] {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

func (s *state) controlChar(i int) error {
	c := s.src[i]
	return s.fail(i, "unescaped control character U+00"+string(hexDigits[c>>4])+string(hexDigits[c&0xf])+" in string")
}

// unescape appends the decoded form of the inside of a canonical string,
// whose only escapes are \" \\ \b \f \n \r \t and \u00XX.
func unescape(dst, canonical []byte) []byte {
	for i := 0; i < len(canonical); i++ {
		c := canonical[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch e := canonical[i]; e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(canonical, i+1)
			dst = append(dst, byte(r))
			i += 4
		default: // '"' and '\\'
			dst = append(dst, e)
		}
	}
	return dst
}
