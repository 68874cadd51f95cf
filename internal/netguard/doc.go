// Package netguard decides which IP addresses fedsender may connect to.
//
// Every address a destination resolves to is chosen by whoever controls that
// destination's DNS or .well-known file, so without a guard anyone could make
// fedsender send requests into the operator's private network. A Guard holds
// a denylist and an allowlist of IP ranges (the allowlist wins) and is plugged
// into net.Dialer.Control, which runs after name resolution and immediately
// before connect(2): the check applies to the address actually connected, so
// a DNS answer that changes between a check and a dial (DNS rebinding) cannot
// slip past it.
//
// Ranges behave as in Synapse's ip_range_blacklist / ip_range_whitelist: every
// IPv4 range also covers its IPv4-compatible (::a.b.c.d) and 6to4
// (2002:aabb:ccdd::) IPv6 forms, IPv4-mapped addresses (::ffff:a.b.c.d) are
// checked as the IPv4 address they carry, and the unspecified addresses
// 0.0.0.0 and :: (which reach the local host on Linux) are always denied
// unless an allowlist entry covers them.
package netguard
