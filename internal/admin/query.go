package admin

import (
	"net/url"
	"strings"
)

// parseQuery reads a raw query string the way Synapse's web server,
// Twisted (twisted.web.http.parse_qs with keep_blank_values, which fills
// request.args), reads it, so that every parameter Synapse would see is
// seen, with the same value:
//
//   - pairs are separated by '&' and by ';' (Go's url.ParseQuery drops a
//     pair that contains ';', and one with a bad escape);
//   - a pair without '=' is not a parameter; a blank value is a value;
//   - in names and values, '+' is a space, then %XX (two hex digits, either
//     case) is the byte XX; a '%' not followed by two hex digits stays as it
//     is, so the value is checked (and refused) rather than lost;
//   - values keep their order: the parameter readers take the first, as
//     Synapse's parse_integer and parse_string do.
//
// Bytes are kept as they are (a value need not be UTF-8): the readers
// check them as Synapse does.
func parseQuery(raw string) url.Values {
	q := url.Values{}
	for pair := range strings.FieldsFuncSeq(raw, func(r rune) bool { return r == '&' || r == ';' }) {
		name, value, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		name, value = unquote(name), unquote(value)
		q[name] = append(q[name], value)
	}
	return q
}

// unquote is Twisted's unquoting of a query name or value: '+' is a space,
// then Python's urllib.parse.unquote_to_bytes.
func unquote(s string) string {
	if !strings.ContainsAny(s, "+%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
