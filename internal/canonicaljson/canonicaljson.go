// Package canonicaljson turns JSON into Matrix canonical JSON: keys sorted by
// code point, no insignificant white space, shortest escapes, non-ASCII as raw
// UTF-8, integers only in ±(2^53-1), no floats. fedsender signs only bytes
// produced here; Go's encoding/json is not canonical.
//
// The work is one pass over the input bytes: values are copied or re-escaped
// straight into the output, and an object's members are reordered in place
// only when the input did not already have them sorted.
package canonicaljson

import (
	"errors"
	"slices"
	"strconv"
	"sync"
)

// ErrInvalid is wrapped by every error for input that cannot be made canonical
// (not JSON, floats, integers out of range, invalid UTF-8, duplicate keys).
var ErrInvalid = errors.New("canonicaljson: invalid input")

// MaxDepth is how many objects and arrays may be nested in each other: 100
// nested arrays are accepted, 101 are not.
const MaxDepth = 100

// MaxInt is the largest magnitude of an integer in canonical JSON, 2^53-1.
const MaxInt = 1<<53 - 1

// InputError reports why and where an input is not acceptable. It wraps
// ErrInvalid.
type InputError struct {
	Offset  int    // byte offset in the input where the problem was found
	Problem string // what is wrong, e.g. "duplicate object key \"a\""
}

// Error implements error.
func (e *InputError) Error() string {
	return ErrInvalid.Error() + ": " + e.Problem + " at offset " + strconv.Itoa(e.Offset)
}

// Unwrap returns ErrInvalid.
func (e *InputError) Unwrap() error { return ErrInvalid }

// Append appends the canonical form of the JSON value in src to dst. On error
// it returns dst with its original length.
func Append(dst, src []byte) ([]byte, error) {
	n := len(dst)
	// The canonical form is never longer than the input, so this is the only
	// allocation for dst.
	dst = slices.Grow(dst, len(src))
	s := statePool.Get().(*state)
	s.src = src
	s.pos = 0
	dst, err := s.document(dst)
	s.release()
	if err != nil {
		return dst[:n], err
	}
	return dst, nil
}

// Canonicalize returns the canonical form of the JSON value in src.
func Canonicalize(src []byte) ([]byte, error) {
	return Append(nil, src)
}

// state is the scanner; its buffers are pooled because Append runs once per
// PDU.
type state struct {
	src     []byte
	pos     int
	members []member // stack of the members of the objects being scanned
	used    int      // most members ever on the stack, for release
	keys    []byte   // stack of decoded keys that had escapes
	tmp     []byte   // scratch for reordering an object's members
}

// member is one object member already written to dst.
type member struct {
	key        []byte // decoded key, in src or in state.keys
	start, end int    // in dst: from the key's opening quote to the end of the value
	offset     int    // of the key in src, for errors
}

var statePool = sync.Pool{New: func() any { return new(state) }}

// maxPooledScratch keeps one huge input from pinning its scratch buffers.
const maxPooledScratch = 64 << 10

func (s *state) release() {
	s.src = nil
	if cap(s.tmp) > maxPooledScratch {
		s.tmp = nil
	}
	if cap(s.keys) > maxPooledScratch {
		s.keys = nil
	}
	// Drop references into the caller's input before pooling.
	clear(s.members[:s.used])
	s.used = 0
	if cap(s.members) > maxPooledScratch/32 {
		s.members = nil
	}
	s.members = s.members[:0]
	s.keys = s.keys[:0]
	s.tmp = s.tmp[:0]
	statePool.Put(s)
}

func (s *state) fail(offset int, problem string) error {
	return &InputError{Offset: offset, Problem: problem}
}

func (s *state) document(dst []byte) ([]byte, error) {
	s.skipSpace()
	dst, err := s.value(dst, 0)
	if err != nil {
		return dst, err
	}
	s.skipSpace()
	if s.pos < len(s.src) {
		return dst, s.fail(s.pos, "trailing data after the JSON value")
	}
	return dst, nil
}

func (s *state) skipSpace() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value scans the value at s.pos; depth is the nesting level of the value.
func (s *state) value(dst []byte, depth int) ([]byte, error) {
	if s.pos >= len(s.src) {
		return dst, s.fail(s.pos, "unexpected end of input, expected a value")
	}
	switch c := s.src[s.pos]; {
	case c == '"':
		dst, _, err := s.str(dst)
		return dst, err
	case c == '{':
		return s.object(dst, depth+1)
	case c == '[':
		return s.array(dst, depth+1)
	case c == '-' || '0' <= c && c <= '9':
		return s.number(dst)
	case c == 't':
		return s.literal(dst, "true")
	case c == 'f':
		return s.literal(dst, "false")
	case c == 'n':
		return s.literal(dst, "null")
	default:
		return dst, s.fail(s.pos, "invalid character "+quoteByte(c)+", expected a value")
	}
}

func (s *state) literal(dst []byte, lit string) ([]byte, error) {
	if len(s.src)-s.pos < len(lit) || string(s.src[s.pos:s.pos+len(lit)]) != lit {
		return dst, s.fail(s.pos, "invalid literal, expected "+lit)
	}
	s.pos += len(lit)
	return append(dst, lit...), nil
}

func tooDeep() string {
	return "objects and arrays nested deeper than " + strconv.Itoa(MaxDepth) + " levels"
}

func (s *state) array(dst []byte, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, s.fail(s.pos, tooDeep())
	}
	s.pos++
	dst = append(dst, '[')
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
		return append(dst, ']'), nil
	}
	for {
		var err error
		if dst, err = s.value(dst, depth); err != nil {
			return dst, err
		}
		s.skipSpace()
		if s.pos >= len(s.src) {
			return dst, s.fail(s.pos, "unexpected end of input in array, expected ',' or ']'")
		}
		switch c := s.src[s.pos]; c {
		case ',':
			s.pos++
			dst = append(dst, ',')
			s.skipSpace()
		case ']':
			s.pos++
			return append(dst, ']'), nil
		default:
			return dst, s.fail(s.pos, "invalid character "+quoteByte(c)+" after array element, expected ',' or ']'")
		}
	}
}

func (s *state) object(dst []byte, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, s.fail(s.pos, tooDeep())
	}
	s.pos++
	dst = append(dst, '{')
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		return append(dst, '}'), nil
	}
	contentStart, base, keysMark := len(dst), len(s.members), len(s.keys)
	for {
		if s.pos >= len(s.src) {
			return dst, s.fail(s.pos, "unexpected end of input in object, expected a key")
		}
		if c := s.src[s.pos]; c != '"' {
			return dst, s.fail(s.pos, "invalid character "+quoteByte(c)+" in object, expected a string key")
		}
		m := member{start: len(dst), offset: s.pos}
		var escaped bool
		var err error
		if dst, escaped, err = s.str(dst); err != nil {
			return dst, err
		}
		if escaped {
			k := len(s.keys)
			s.keys = unescape(s.keys, dst[m.start+1:len(dst)-1])
			m.key = s.keys[k:len(s.keys):len(s.keys)]
		} else {
			m.key = s.src[m.offset+1 : s.pos-1]
		}
		s.skipSpace()
		if s.pos >= len(s.src) || s.src[s.pos] != ':' {
			return dst, s.fail(s.pos, "expected ':' after object key")
		}
		s.pos++
		dst = append(dst, ':')
		s.skipSpace()
		if dst, err = s.value(dst, depth); err != nil {
			return dst, err
		}
		m.end = len(dst)
		s.members = append(s.members, m)
		s.used = max(s.used, len(s.members))
		s.skipSpace()
		if s.pos >= len(s.src) {
			return dst, s.fail(s.pos, "unexpected end of input in object, expected ',' or '}'")
		}
		c := s.src[s.pos]
		if c == ',' {
			s.pos++
			dst = append(dst, ',')
			s.skipSpace()
			continue
		}
		if c != '}' {
			return dst, s.fail(s.pos, "invalid character "+quoteByte(c)+" after object member, expected ',' or '}'")
		}
		s.pos++
		dst, err = s.sortMembers(dst, contentStart, base)
		if err != nil {
			return dst, err
		}
		s.members = s.members[:base]
		s.keys = s.keys[:keysMark]
		return append(dst, '}'), nil
	}
}

// sortMembers puts the members s.members[base:], written to dst from
// contentStart on, in key order, and rejects duplicate keys.
func (s *state) sortMembers(dst []byte, contentStart, base int) ([]byte, error) {
	ms := s.members[base:]
	sorted := true
	for i := 1; i < len(ms); i++ {
		switch c := compareKeys(ms[i-1], ms[i]); {
		case c == 0:
			return dst, s.duplicate(ms[i-1], ms[i])
		case c > 0:
			sorted = false
		}
	}
	if sorted {
		return dst, nil
	}
	if len(ms) <= 16 {
		insertionSort(ms)
	} else {
		slices.SortFunc(ms, compareKeys)
	}
	for i := 1; i < len(ms); i++ {
		if compareKeys(ms[i-1], ms[i]) == 0 {
			return dst, s.duplicate(ms[i-1], ms[i])
		}
	}
	s.tmp = append(s.tmp[:0], dst[contentStart:]...)
	dst = dst[:contentStart]
	for i, m := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, s.tmp[m.start-contentStart:m.end-contentStart]...)
	}
	return dst, nil
}

// insertionSort is faster than slices.SortFunc for the dozen keys of an
// event: no calls through a func value.
func insertionSort(ms []member) {
	for i := 1; i < len(ms); i++ {
		m := ms[i]
		j := i
		for ; j > 0 && string(ms[j-1].key) > string(m.key); j-- {
			ms[j] = ms[j-1]
		}
		ms[j] = m
	}
}

// compareKeys orders by code point: for valid UTF-8 that is byte order.
func compareKeys(a, b member) int { return compareBytes(a.key, b.key) }

func compareBytes(a, b []byte) int {
	// string conversions in a comparison do not allocate.
	switch {
	case string(a) < string(b):
		return -1
	case string(a) > string(b):
		return 1
	}
	return 0
}

func (s *state) duplicate(a, b member) error {
	offset := max(a.offset, b.offset)
	key := a.key
	if len(key) > 40 {
		key = append(key[:40:40], "..."...)
	}
	return s.fail(offset, "duplicate object key "+strconv.Quote(string(key)))
}

// number copies an integer, rejecting fractions, exponents and magnitudes
// above MaxInt.
func (s *state) number(dst []byte) ([]byte, error) {
	src := s.src
	start := s.pos
	i := start
	if src[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i >= len(src):
		return dst, s.fail(i, "unexpected end of input in number")
	case src[i] == '0':
		i++
		if i < len(src) && isDigit(src[i]) {
			return dst, s.fail(start, "number with a leading zero")
		}
	case isDigit(src[i]):
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	default:
		return dst, s.fail(i, "invalid character "+quoteByte(src[i])+" in number")
	}
	if i < len(src) && (src[i] == '.' || src[i] == 'e' || src[i] == 'E') {
		return dst, s.fail(start, "floats are not allowed (fraction or exponent in number)")
	}
	if n := i - digits; n > len(maxIntDigits) || n == len(maxIntDigits) && string(src[digits:i]) > maxIntDigits {
		return dst, s.fail(start, "integer out of range ±(2^53-1)")
	}
	s.pos = i
	if i-start == 2 && src[start] == '-' && src[digits] == '0' {
		return append(dst, '0'), nil
	}
	return append(dst, src[start:i]...), nil
}

var maxIntDigits = strconv.Itoa(MaxInt)

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func quoteByte(c byte) string {
	if c < 0x80 {
		return strconv.QuoteRune(rune(c))
	}
	return "byte 0x" + strconv.FormatUint(uint64(c), 16)
}
