package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrDenied is wrapped by every error for an address the Guard refuses.
var ErrDenied = errors.New("netguard: IP address denied")

// DefaultDenylist returns Synapse's default ip_range_blacklist: loopback,
// private, carrier-grade NAT, link-local, documentation, benchmarking,
// multicast, unique-local and site-local ranges.
func DefaultDenylist() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("192.88.99.0/24"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("ff00::/8"),
		netip.MustParsePrefix("fec0::/10"),
	}
}

// alwaysDenied are added to every denylist, as Synapse does: connecting to
// the unspecified address reaches the local host.
var alwaysDenied = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/32"),
	netip.MustParsePrefix("::/128"),
}

// Guard decides whether an IP address may be connected to. It is safe for
// concurrent use and immutable after New.
type Guard struct {
	deny, allow []netip.Prefix
}

// New returns a Guard refusing the deny ranges except where an allow range
// covers the address. Pass DefaultDenylist() for Synapse's behaviour; tests
// that talk to loopback servers add 127.0.0.0/8 (and ::1/128) to allow.
// Invalid prefixes are ignored.
func New(deny, allow []netip.Prefix) *Guard {
	return &Guard{
		deny:  expand(append(append([]netip.Prefix(nil), deny...), alwaysDenied...)),
		allow: expand(allow),
	}
}

// Allowed reports whether addr may be connected to: true when an allow range
// covers it, otherwise false when a deny range covers it, otherwise true.
// IPv4-mapped IPv6 addresses are checked as IPv4; zones are ignored. The zero
// Addr is never allowed.
func (g *Guard) Allowed(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	if contains(g.allow, addr) {
		return true
	}
	return !contains(g.deny, addr)
}

// Check returns nil when addr is allowed and otherwise an error wrapping
// ErrDenied that names the address.
func (g *Guard) Check(addr netip.Addr) error {
	if g.Allowed(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDenied, addr)
}

// Control has the signature of net.Dialer.Control. The dialer calls it with
// the resolved "ip:port" it is about to connect to; an error aborts that
// connection attempt. Addresses that are not "ip:port" are refused.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s %s is not an IP address and port", ErrDenied, network, address)
	}
	if !g.Allowed(ap.Addr()) {
		return fmt.Errorf("%w: %s %s", ErrDenied, network, address)
	}
	return nil
}

func contains(prefixes []netip.Prefix, addr netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// expand normalises prefixes (masked, IPv4-mapped ones as IPv4, invalid ones
// dropped) and adds, for every IPv4 prefix, its IPv4-compatible and 6to4
// IPv6 forms. IPv4-mapped forms need no entry: Allowed unmaps addresses.
func expand(prefixes []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, 3*len(prefixes))
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		p = unmapPrefix(p).Masked()
		out = append(out, p)
		if !p.Addr().Is4() {
			continue
		}
		v4 := p.Addr().As4()
		var compat, sixToFour [16]byte
		copy(compat[12:], v4[:])
		sixToFour[0], sixToFour[1] = 0x20, 0x02
		copy(sixToFour[2:6], v4[:])
		out = append(out,
			netip.PrefixFrom(netip.AddrFrom16(compat), 96+p.Bits()),
			netip.PrefixFrom(netip.AddrFrom16(sixToFour), 16+p.Bits()),
		)
	}
	return out
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96): addresses
// are unmapped before they are checked, so mapped addresses only ever meet
// IPv4 ranges.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4In6() || p.Bits() < 96 {
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
}
