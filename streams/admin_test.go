package streams

import (
	"errors"
	"testing"
)

func TestControlSubject(t *testing.T) {
	for _, p := range []int{0, 7, 63, 1000} {
		got, err := PartitionFromControlSubject(ControlResetSubject(p))
		if err != nil || got != p {
			t.Errorf("round trip of partition %d = %d, %v", p, got, err)
		}
	}
	for _, s := range []string{"fedsender.control.*.reset", "fedsender.control.>", "fedsender.control.01.reset",
		"fedsender.control.-1.reset", "fedsender.control.1.wake", "fedsender.pdu", "fedsender.control..reset"} {
		if _, err := PartitionFromControlSubject(s); !errors.Is(err, ErrBadSubject) {
			t.Errorf("PartitionFromControlSubject(%q) = %v, want ErrBadSubject", s, err)
		}
	}
}

func TestDestinationKey(t *testing.T) {
	for name, key := range map[string]string{
		"matrix.org":       "matrix_org",
		"example.com:8448": "example_com=3A8448",
		"[::1]:8448":       "=5B=3A=3A1=5D=3A8448",
		"a*b >c":           "a=2Ab=20=3Ec",
	} {
		if got := DestinationKey(name); got != key {
			t.Errorf("DestinationKey(%q) = %q, want %q", name, got, key)
		}
		if back, err := DestinationFromKey(key); err != nil || back != name {
			t.Errorf("DestinationFromKey(%q) = %q, %v", key, back, err)
		}
	}
}
