package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
)

var (
	errNotObject = errors.New("not a JSON object")
	errNotArray  = errors.New("not a JSON array")
)

// forEachMember calls fn with the raw key (quotes included) and raw value of
// each member of the object obj. obj must be valid JSON, as json.Valid has
// checked the whole body first: this is a fast walk, not a parser. It lets
// the receiver read a transaction's few fields and two ids per PDU without
// decoding the rest, at a fraction of encoding/json's cost.
func forEachMember(obj []byte, fn func(key, val []byte)) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errNotObject
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) {
			return errNotObject
		}
		switch obj[i] {
		case '}':
			return nil
		case ',':
			i = skipSpace(obj, i+1)
		}
		k := i
		i = skipString(obj, i)
		key := obj[k:min(i, len(obj))]
		if bytes.IndexByte(key, '\\') >= 0 { // rare: compare the unescaped name
			if name, ok := jsonString(key); ok {
				key = append(append([]byte{'"'}, name...), '"')
			}
		}
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] != ':' {
			return errNotObject
		}
		i = skipSpace(obj, i+1)
		v := i
		i = skipValue(obj, i)
		if i > len(obj) {
			return errNotObject
		}
		fn(key, obj[v:i])
	}
}

// forEachElement calls fn with each raw element of the array arr, which
// must be valid JSON.
func forEachElement(arr []byte, fn func(val []byte)) error {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return errNotArray
	}
	i++
	for {
		i = skipSpace(arr, i)
		if i >= len(arr) {
			return errNotArray
		}
		switch arr[i] {
		case ']':
			return nil
		case ',':
			i = skipSpace(arr, i+1)
		}
		v := i
		i = skipValue(arr, i)
		if i > len(arr) {
			return errNotArray
		}
		fn(arr[v:i])
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i]. It jumps
// from quote to quote; a quote preceded by an odd number of backslashes is
// escaped.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			break
		}
		i += q
		n := 0
		for j := i - 1; b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
	}
	return len(b) + 1
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b) + 1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b) + 1
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' &&
			b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}

// jsonString decodes a raw JSON string value. Plain ASCII without escapes,
// the usual case for ids, is taken as is; anything else goes through
// encoding/json, which also replaces invalid UTF-8.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	plain := true
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}
