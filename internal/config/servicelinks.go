package config

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Kubernetes gives every pod, for each Service of its namespace that
// existed when it started, docker-link variables named after the Service
// (upper case, '-' as '_'). A Service whose name starts with "fedsender"
// thus yields FEDSENDER_* variables that are no setting. They have a fixed
// shape, name and value, which isServiceLink recognises so that Load can
// pass over them while still refusing a misspelt setting:
//
//	<NAME>_SERVICE_HOST=10.96.0.11
//	<NAME>_SERVICE_PORT=8008
//	<NAME>_SERVICE_PORT_<PORTNAME>=8008
//	<NAME>_PORT=tcp://10.96.0.11:8008
//	<NAME>_PORT_8008_TCP=tcp://10.96.0.11:8008
//	<NAME>_PORT_8008_TCP_PROTO=tcp
//	<NAME>_PORT_8008_TCP_PORT=8008
//	<NAME>_PORT_8008_TCP_ADDR=10.96.0.11
var (
	serviceHostVar = regexp.MustCompile(`^[A-Z0-9_]+_SERVICE_HOST$`)
	servicePortVar = regexp.MustCompile(`^[A-Z0-9_]+_SERVICE_PORT(_[A-Z0-9_]+)?$`)
	linkVar        = regexp.MustCompile(`^[A-Z0-9_]+_PORT$`)
	linkPortVar    = regexp.MustCompile(`^[A-Z0-9_]+_PORT_([0-9]+)_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?$`)
)

// serviceLinkName reports whether name has the shape of a service-link
// variable, whatever its value.
func serviceLinkName(name string) bool {
	for _, re := range []*regexp.Regexp{serviceHostVar, servicePortVar, linkVar, linkPortVar} {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// isServiceLink reports whether name=value is a variable Kubernetes
// injects for a Service: the name has one of the shapes above and the
// value is what Kubernetes puts in it. A name may have several shapes
// (X_PORT_8008_TCP_PORT also ends in _PORT): any one that fits will do.
func isServiceLink(name, value string) bool {
	if serviceHostVar.MatchString(name) && isIP(value) {
		return true
	}
	if servicePortVar.MatchString(name) && isPort(value) {
		return true
	}
	if linkVar.MatchString(name) {
		proto, _, _ := strings.Cut(value, "://")
		if (proto == "tcp" || proto == "udp" || proto == "sctp") && isLinkURL(value, proto, "") {
			return true
		}
	}
	m := linkPortVar.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	port, proto := m[1], strings.ToLower(m[2])
	switch m[3] {
	case "":
		return isLinkURL(value, proto, port)
	case "_PROTO":
		return value == proto
	case "_PORT":
		return value == port && isPort(value)
	default: // _ADDR
		return isIP(value)
	}
}

// isLinkURL reports whether value is proto://address:port, with the given
// port unless port is empty.
func isLinkURL(value, proto, port string) bool {
	hostPort, ok := strings.CutPrefix(value, proto+"://")
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(hostPort)
	return err == nil && ap.Port() != 0 && (port == "" || strconv.Itoa(int(ap.Port())) == port)
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 1<<16 && strconv.Itoa(n) == s
}
