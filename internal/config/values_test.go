package config

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1000000", 1000000},
		{"512B", 512},
		{"1KiB", 1 << 10},
		{"512MiB", 512 << 20},
		{"10GiB", 10 << 30},
		{"2TiB", 2 << 40},
		{"1KB", 1e3},
		{"5MB", 5e6},
		{"3GB", 3e9},
		{"1TB", 1e12},
		{"10 GiB", 10 << 30},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "GiB", "10G", "10gib", "-1", "-1MiB", "1.5GiB", "ten", "9999999TiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestIPRangeBareAddress: a bare address in an IP range list is that one
// address (/32 or /128), as Synapse reads it, in the file and in the
// environment.
func TestIPRangeBareAddress(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::7/128"),
		netip.MustParsePrefix("10.0.0.0/8")}
	fromFile := mustParse(t, minimalYAML+"federation:\n  ip_range_allowlist: [192.0.2.7, \"2001:db8::7\", 10.0.0.0/8]\n"+
		"  ip_range_denylist: [192.0.2.7]\n")
	fromEnv := mustParse(t, minimalYAML, "FEDSENDER_FEDERATION_IP_RANGE_ALLOWLIST=192.0.2.7, 2001:db8::7,10.0.0.0/8",
		"FEDSENDER_FEDERATION_IP_RANGE_DENYLIST=192.0.2.7")
	for _, c := range []Config{fromFile, fromEnv} {
		if !slices.Equal(c.Federation.IPRangeAllowlist, want) {
			t.Errorf("ip_range_allowlist = %v, want %v", c.Federation.IPRangeAllowlist, want)
		}
		if !slices.Equal(c.Federation.IPRangeDenylist, want[:1]) {
			t.Errorf("ip_range_denylist = %v, want %v", c.Federation.IPRangeDenylist, want[:1])
		}
	}
	_, err := Parse([]byte(minimalYAML+"federation:\n  ip_range_allowlist: [192.0.2.300]\n"), nil)
	wantErr(t, err, `federation.ip_range_allowlist: invalid CIDR "192.0.2.300"`)
}
