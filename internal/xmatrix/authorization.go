package xmatrix

import (
	"fmt"
	"strings"
)

// Authorization is a parsed X-Matrix Authorization header.
type Authorization struct {
	Origin, Destination, KeyID, Sig string
}

const scheme = "X-Matrix"

// String renders the header value:
//
//	X-Matrix origin="o",destination="d",key="ed25519:v",sig="..."
//
// Values are quoted, '"' and '\\' escaped with a backslash. An empty
// Destination is left out, as senders before Matrix 1.3 did.
func (a Authorization) String() string {
	var b strings.Builder
	b.Grow(len(scheme) + len(a.Origin) + len(a.Destination) + len(a.KeyID) + len(a.Sig) + 48)
	b.WriteString(scheme + " origin=")
	writeQuoted(&b, a.Origin)
	if a.Destination != "" {
		b.WriteString(",destination=")
		writeQuoted(&b, a.Destination)
	}
	b.WriteString(",key=")
	writeQuoted(&b, a.KeyID)
	b.WriteString(",sig=")
	writeQuoted(&b, a.Sig)
	return b.String()
}

// writeQuoted writes an RFC 9110 quoted-string; Synapse strips the quotes and
// backslashes the same way.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// ParseAuthorization parses an X-Matrix Authorization header value.
//
// It reads the header the way Synapse and the other servers write it: the
// scheme (any case), then comma separated name=value parameters, names in any
// case, values quoted (with backslash escapes) or bare, spaces and tabs
// allowed around commas and '='. origin, key and sig are required;
// destination is optional (senders before Matrix 1.3 left it out) and unknown
// parameters are ignored. A repeated parameter is an error, since servers
// disagree on which one counts.
func ParseAuthorization(header string) (Authorization, error) {
	p := authParser{s: header}
	p.skipSpace()
	if !p.scheme() {
		return Authorization{}, p.fail("want scheme " + scheme + " followed by a space")
	}
	var a Authorization
	seen := map[string]bool{}
	for {
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' { // empty list element
			p.i++
			continue
		}
		if p.i == len(p.s) {
			break
		}
		name, value, err := p.param()
		if err != nil {
			return Authorization{}, err
		}
		if seen[name] {
			return Authorization{}, p.fail("parameter " + name + " given twice")
		}
		seen[name] = true
		switch name {
		case "origin":
			a.Origin = value
		case "destination":
			a.Destination = value
		case "key":
			a.KeyID = value
		case "sig":
			a.Sig = value
		}
	}
	for _, req := range []struct{ name, value string }{{"origin", a.Origin}, {"key", a.KeyID}, {"sig", a.Sig}} {
		if req.value == "" {
			return Authorization{}, fmt.Errorf("%w: no %s parameter", ErrBadAuthorization, req.name)
		}
	}
	return a, nil
}

type authParser struct {
	s string
	i int
}

func (p *authParser) fail(problem string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrBadAuthorization, problem, p.i)
}

func (p *authParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *authParser) scheme() bool {
	n := len(scheme)
	if len(p.s)-p.i <= n || !strings.EqualFold(p.s[p.i:p.i+n], scheme) {
		return false
	}
	if c := p.s[p.i+n]; c != ' ' && c != '\t' {
		return false
	}
	p.i += n
	return true
}

// param reads name=value and the comma after it, if any.
func (p *authParser) param() (name, value string, err error) {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", "", p.fail(fmt.Sprintf("want a parameter name, got %q", p.s[p.i]))
	}
	name = strings.ToLower(p.s[start:p.i])
	p.skipSpace()
	if p.i == len(p.s) || p.s[p.i] != '=' {
		return "", "", p.fail("want '=' after parameter " + name)
	}
	p.i++
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '"' {
		value, err = p.quoted()
	} else {
		value, err = p.bare()
	}
	if err != nil {
		return "", "", err
	}
	p.skipSpace()
	switch {
	case p.i == len(p.s):
	case p.s[p.i] == ',':
		p.i++
	default:
		return "", "", p.fail(fmt.Sprintf("want ',' after parameter %s, got %q", name, p.s[p.i]))
	}
	return name, value, nil
}

func (p *authParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\' && p.i+1 < len(p.s):
			p.i++
			c = p.s[p.i]
		}
		if isCtl(c) {
			return "", p.fail("control character in a quoted value")
		}
		b.WriteByte(c)
		p.i++
	}
	return "", p.fail("unterminated quoted value")
}

// bare reads an unquoted value: everything up to a comma or white space,
// which covers base64 ('+', '/', '=') and server names with ports.
func (p *authParser) bare() (string, error) {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == ',' || c == ' ' || c == '\t' {
			break
		}
		if isCtl(c) || c == '"' || c == '\\' {
			return "", p.fail(fmt.Sprintf("%q in an unquoted value", c))
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

func isCtl(c byte) bool { return c < 0x20 || c == 0x7f }

// isTokenChar reports RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
