package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDefaultDenylistIsSynapses(t *testing.T) {
	// Synapse's DEFAULT_IP_RANGE_BLACKLIST (synapse/config/server.py), in order.
	want := []string{
		"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
		"192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "::1/128", "fe80::/10",
		"fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10",
	}
	got := DefaultDenylist()
	if len(got) != len(want) {
		t.Fatalf("DefaultDenylist has %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("DefaultDenylist()[%d] = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestAllowed(t *testing.T) {
	def := New(DefaultDenylist(), nil)
	loopbackAllowed := New(DefaultDenylist(), prefixes("127.0.0.0/8", "::1/128"))
	narrowAllow := New(DefaultDenylist(), prefixes("10.1.2.3/32"))
	nothing := New(nil, nil)
	mappedDeny := New(prefixes("::ffff:8.8.8.0/120"), nil)

	tests := []struct {
		g    *Guard
		addr string
		want bool
	}{
		{def, "8.8.8.8", true},
		{def, "2001:4860:4860::8888", true},
		{def, "127.0.0.1", false},
		{def, "127.255.255.254", false},
		{def, "10.0.0.1", false},
		{def, "172.16.0.1", false},
		{def, "172.31.255.255", false},
		{def, "172.32.0.1", true},
		{def, "192.168.1.1", false},
		{def, "100.64.0.1", false},
		{def, "100.128.0.1", true},
		{def, "169.254.169.254", false}, // cloud metadata
		{def, "192.0.2.1", false},
		{def, "198.18.0.1", false},
		{def, "198.19.255.255", false},
		{def, "198.20.0.1", true},
		{def, "224.0.0.1", false},
		{def, "239.255.255.255", false},
		{def, "::1", false},
		{def, "fe80::1", false},
		{def, "fe80::1%eth0", false},
		{def, "fd00::1", false},
		{def, "fc00::1", false},
		{def, "2001:db8::1", false},
		{def, "ff02::1", false},
		{def, "fec0::1", false},
		// Always denied: these reach the local host.
		{def, "0.0.0.0", false},
		{def, "::", false},
		{nothing, "0.0.0.0", false},
		{nothing, "::", false},
		{nothing, "127.0.0.1", true},
		// IPv4-mapped addresses are checked as IPv4.
		{def, "::ffff:127.0.0.1", false},
		{def, "::ffff:10.1.1.1", false},
		{def, "::ffff:8.8.8.8", true},
		{loopbackAllowed, "::ffff:127.0.0.1", true},
		// IPv4-compatible and 6to4 forms of denied IPv4 ranges are denied too.
		{def, "::127.0.0.1", false},
		{def, "::10.0.0.1", false},
		{def, "2002:7f00:1::", false},  // 6to4 of 127.0.0.1
		{def, "2002:a00:1::1", false},  // 6to4 of 10.0.0.1
		{def, "2002:808:808::1", true}, // 6to4 of 8.8.8.8
		// The allowlist wins.
		{loopbackAllowed, "127.0.0.1", true},
		{loopbackAllowed, "::1", true},
		{loopbackAllowed, "10.0.0.1", false},
		{narrowAllow, "10.1.2.3", true},
		{narrowAllow, "10.1.2.4", false},
		// A mapped prefix is normalised to the IPv4 range it carries.
		{mappedDeny, "8.8.8.8", false},
		{mappedDeny, "::ffff:8.8.8.8", false},
		{mappedDeny, "8.8.9.8", true},
	}
	for _, tt := range tests {
		addr := netip.MustParseAddr(tt.addr)
		if got := tt.g.Allowed(addr); got != tt.want {
			t.Errorf("Allowed(%s) = %v, want %v (deny %v, allow %v)", tt.addr, got, tt.want, tt.g.deny, tt.g.allow)
		}
		err := tt.g.Check(addr)
		if (err == nil) != tt.want {
			t.Errorf("Check(%s) = %v, want allowed=%v", tt.addr, err, tt.want)
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), addr.String())) {
			t.Errorf("Check(%s) = %v, want ErrDenied naming the address", tt.addr, err)
		}
	}
	if def.Allowed(netip.Addr{}) {
		t.Error("the zero Addr must not be allowed")
	}
}

func TestControl(t *testing.T) {
	g := New(DefaultDenylist(), prefixes("192.168.7.0/24"))
	tests := []struct {
		address string
		denied  bool
	}{
		{"8.8.8.8:443", false},
		{"[2001:4860:4860::8888]:8448", false},
		{"192.168.7.9:8448", false},
		{"127.0.0.1:8448", true},
		{"[::1]:8448", true},
		{"[::ffff:127.0.0.1]:8448", true},
		{"[fe80::1%eth0]:8448", true},
		{"example.org:443", true}, // never resolved here: refuse
		{"garbage", true},
	}
	for _, tt := range tests {
		err := g.Control("tcp4", tt.address, nil)
		if tt.denied != (err != nil) {
			t.Errorf("Control(%q) = %v, want denied=%v", tt.address, err, tt.denied)
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tt.address)) {
			t.Errorf("Control(%q) = %v, want ErrDenied naming the address", tt.address, err)
		}
	}
}

// TestControlInDialer checks the guard where it is used: a dialer with
// Control refuses to connect to a listening loopback server, and connects
// when loopback is allowed.
func TestControlInDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	denying := &net.Dialer{Control: New(DefaultDenylist(), nil).Control}
	if c, err := denying.DialContext(ctx, "tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("dial to loopback succeeded through the default denylist")
	} else if !errors.Is(err, ErrDenied) {
		t.Fatalf("dial error %v does not wrap ErrDenied", err)
	}

	allowing := &net.Dialer{Control: New(DefaultDenylist(), prefixes("127.0.0.0/8")).Control}
	c, err := allowing.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial with loopback allowed: %v", err)
	}
	c.Close()
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
