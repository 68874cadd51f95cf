package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
)

var (
	durationType = reflect.TypeFor[time.Duration]()
	prefixesType = reflect.TypeFor[[]netip.Prefix]()
)

// setScalar parses text according to the type of v and stores it in v.
// int64 fields are byte sizes. The error does not name the setting; the
// caller adds that.
func setScalar(v reflect.Value, text string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("invalid duration %q", text)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(text)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", text)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.ParseInt(text, 10, 0)
		if err != nil {
			return fmt.Errorf("invalid integer %q", text)
		}
		v.SetInt(n)
	case v.Kind() == reflect.Int64:
		n, err := parseSize(text)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("invalid number %q", text)
		}
		v.SetFloat(f)
	default:
		// Reached only when a field of an unsupported type is added to
		// Config, which TestEverySettingParses catches.
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

// setList parses items into the list v: CIDRs, or plain strings.
func setList(v reflect.Value, items []string) error {
	if v.Type() == reflect.TypeFor[[]string]() {
		// nil when empty, like the default.
		var list []string
		for _, item := range items {
			if item == "" {
				return errors.New("empty item in the list")
			}
			list = append(list, item)
		}
		v.Set(reflect.ValueOf(list))
		return nil
	}
	if v.Type() != prefixesType {
		return fmt.Errorf("unsupported list type %s", v.Type())
	}
	// nil when empty, like the default, so an empty list compares equal to it.
	var prefixes []netip.Prefix
	for _, item := range items {
		p, err := parseCIDR(item)
		if err != nil {
			return err
		}
		prefixes = append(prefixes, p)
	}
	v.Set(reflect.ValueOf(prefixes))
	return nil
}

// isList reports whether the setting of type t holds a list.
func isList(t reflect.Type) bool { return t.Kind() == reflect.Slice }

// parseCIDR parses a network in CIDR notation, or a bare address as the
// network of that one address (/32 or /128), as Synapse does. A prefix
// with host bits set (10.0.0.1/8) is refused rather than masked: in an IP
// range list it is more likely a typo than intent.
func parseCIDR(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: host bits set (did you mean %s?)", s, m)
	}
	return p, nil
}

// sizeUnits are the suffixes parseSize accepts, binary and decimal.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// parseSize parses a byte count: a whole number, optionally followed by one
// of sizeUnits ("10GiB", "512MiB", "1000000"). Negative sizes are refused.
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.bytes
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}
