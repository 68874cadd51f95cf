package config

import "testing"

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
