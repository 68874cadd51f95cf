package canonicaljson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCanonicalize checks that accepted input is JSON, that the output is
// canonical (a fixed point) and means the same to encoding/json, and, where
// the slow reference below can decide, that Canonicalize agrees with it both
// on what it accepts and on the bytes it writes.
func FuzzCanonicalize(f *testing.F) {
	for _, tc := range validCases {
		f.Add([]byte(tc.in))
	}
	for _, tc := range invalidCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		want, verdict := reference(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if verdict == refValid {
				t.Fatalf("Canonicalize(%q) rejected input the reference accepts as %q: %v", in, want, err)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Canonicalize(%q) accepted invalid JSON", in)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
		var a, b any
		if err := json.Unmarshal(in, &a); err != nil {
			t.Fatalf("encoding/json cannot read the input %q: %v", in, err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("encoding/json cannot read the output %q: %v", out, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed: %q means %#v, output %q means %#v", in, a, out, b)
		}
		switch verdict {
		case refInvalid:
			t.Fatalf("Canonicalize(%q) = %q, but the reference rejects it", in, out)
		case refValid:
			if !bytes.Equal(out, want) {
				t.Fatalf("Canonicalize(%q) = %q, reference %q", in, out, want)
			}
		}
	})
}

type refVerdict int

const (
	refUnknown refVerdict = iota // the reference cannot tell
	refValid
	refInvalid
)

// reference canonicalises the slow, obvious way, through encoding/json's
// tokenizer. encoding/json silently repairs lone surrogate escapes, so input
// that may hold one is left undecided.
func reference(in []byte) ([]byte, refVerdict) {
	if !json.Valid(in) || !utf8.Valid(in) {
		return nil, refInvalid
	}
	lower := strings.ToLower(string(in))
	if strings.Contains(lower, `\ud`) {
		return nil, refUnknown
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var out bytes.Buffer
	if err := refValue(dec, &out, 0); err != nil {
		return nil, refInvalid
	}
	return out.Bytes(), refValid
}

func refValue(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok := tok.(type) {
	case json.Delim:
		if depth+1 > MaxDepth {
			return errors.New("too deep")
		}
		if tok == '[' {
			return refArray(dec, out, depth+1)
		}
		return refObject(dec, out, depth+1)
	case string:
		refString(out, tok)
	case json.Number:
		n, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil || n > MaxInt || n < -MaxInt {
			return fmt.Errorf("not an integer in range: %s", tok)
		}
		out.WriteString(strconv.FormatInt(n, 10))
	case bool:
		out.WriteString(strconv.FormatBool(tok))
	case nil:
		out.WriteString("null")
	}
	return nil
}

func refArray(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	out.WriteByte('[')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		if err := refValue(dec, out, depth); err != nil {
			return err
		}
	}
	out.WriteByte(']')
	_, err := dec.Token()
	return err
}

func refObject(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	type kv struct{ k, v string }
	var members []kv
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		var v bytes.Buffer
		if err := refValue(dec, &v, depth); err != nil {
			return err
		}
		members = append(members, kv{tok.(string), v.String()})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	slices.SortFunc(members, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			if members[i-1].k == m.k {
				return errors.New("duplicate key")
			}
			out.WriteByte(',')
		}
		refString(out, m.k)
		out.WriteByte(':')
		out.WriteString(m.v)
	}
	out.WriteByte('}')
	return nil
}

func refString(out *bytes.Buffer, s string) {
	out.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(out, `\u%04x`, r)
			} else {
				out.WriteRune(r)
			}
		}
	}
	out.WriteByte('"')
}

// TestReferenceAgrees runs the table through the fuzz target's reference, so
// that the reference itself is checked against hand-written expectations.
func TestReferenceAgrees(t *testing.T) {
	for _, tc := range validCases {
		got, verdict := reference([]byte(tc.in))
		if verdict == refUnknown {
			continue
		}
		if verdict != refValid || string(got) != tc.want {
			t.Errorf("reference(%q) = %q, %v; want %q", tc.in, got, verdict, tc.want)
		}
	}
	for _, tc := range invalidCases {
		if got, verdict := reference([]byte(tc.in)); verdict == refValid {
			t.Errorf("reference(%q) = %q, accepted; the table says %q", tc.in, got, tc.problem)
		}
	}
}
