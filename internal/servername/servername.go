package servername

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid server name")

// MaxLength is the longest server name accepted.
const MaxLength = 255

// Validate reports whether name is a valid Matrix server name; the error names
// what is wrong with it.
func Validate(name string) error {
	_, _, err := Split(name)
	return err
}

// Split returns the host (without brackets for IPv6) and the port, 0 when the
// name has none. It validates the name.
func Split(name string) (host string, port int, err error) {
	switch {
	case name == "":
		return "", 0, invalid(name, "empty")
	case len(name) > MaxLength:
		return "", 0, invalid(name, fmt.Sprintf("longer than %d bytes", MaxLength))
	}
	hostPart, portPart, hasPort, err := cut(name)
	if err != nil {
		return "", 0, err
	}
	if hasPort {
		if port, err = parsePort(portPart); err != nil {
			return "", 0, invalid(name, err.Error())
		}
	}
	if strings.HasPrefix(hostPart, "[") {
		host, err = parseIPv6(hostPart)
	} else {
		host, err = parseHost(hostPart)
	}
	if err != nil {
		return "", 0, invalid(name, err.Error())
	}
	return host, port, nil
}

// cut separates the host from the port. Only a bracketed IPv6 literal may
// contain colons, so for anything else the first colon starts the port.
func cut(name string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return "", "", false, invalid(name, "IPv6 literal without closing ']'")
		}
		host, rest := name[:end+1], name[end+1:]
		if rest == "" {
			return host, "", false, nil
		}
		if rest[0] != ':' {
			return "", "", false, invalid(name, fmt.Sprintf("unexpected %q after IPv6 literal", rest))
		}
		return host, rest[1:], true, nil
	}
	if strings.Count(name, ":") > 1 {
		return "", "", false, invalid(name, "more than one ':' (an IPv6 literal must be in brackets)")
	}
	host, port, hasPort = strings.Cut(name, ":")
	return host, port, hasPort, nil
}

func parsePort(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if len(s) > 5 {
		return 0, fmt.Errorf("port %q has more than 5 digits", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", s)
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not in 1-65535", s)
	}
	return n, nil
}

func parseIPv6(bracketed string) (string, error) {
	lit := bracketed[1 : len(bracketed)-1]
	if len(lit) < 2 || len(lit) > 45 {
		return "", fmt.Errorf("IPv6 literal %q must be 2 to 45 characters", lit)
	}
	for i := 0; i < len(lit); i++ {
		if !isIPv6Char(lit[i]) {
			return "", fmt.Errorf("IPv6 literal %q contains %q", lit, lit[i])
		}
	}
	addr, err := netip.ParseAddr(lit)
	if err != nil || !addr.Is6() {
		return "", fmt.Errorf("%q is not an IPv6 address", lit)
	}
	return lit, nil
}

func parseHost(host string) (string, error) {
	if host == "" {
		return "", errors.New("empty hostname")
	}
	for i := 0; i < len(host); i++ {
		if !isDNSChar(host[i]) {
			return "", fmt.Errorf("hostname contains %q (allowed: letters, digits, '-', '.')", host[i])
		}
	}
	if looksLikeIPv4(host) {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("%q is not a valid IPv4 address", host)
		}
	}
	return host, nil
}

// looksLikeIPv4 matches the IPv4address production of the grammar.
func looksLikeIPv4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func isIPv6Char(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == ':' || c == '.'
}

func isDNSChar(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '.'
}

func invalid(name, why string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalid, truncate(name), why)
}

// truncate keeps error messages short when the input is hostile.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// Normalize returns the form of a valid server name under which fedsender
// delivers, compares and stores it: lower-cased, since DNS compares host
// names without regard to case (and IPv6 hex digits, like ports, have no
// case to keep). "Matrix.ORG:8448" and "matrix.org:8448" are one server;
// "matrix.org" and "matrix.org:8448" are two, as the Matrix specification
// resolves them differently.
func Normalize(name string) string {
	return strings.ToLower(name)
}
