package admin

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Query parameters are read the way Synapse's parse_integer, parse_string
// and parse_enum read them: the first value counts, and the error texts are
// theirs.

// intParam returns a non-negative integer parameter, or def when absent.
// Like Python's int(), it accepts surrounding spaces and a sign; a value too
// large for int64 is taken as the largest (Python has no limit).
func intParam(q url.Values, name string, def int64) (int64, error) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, withMessage(ErrInvalidParam, fmt.Sprintf("Query parameter %s must be an integer", name))
	}
	if n < 0 {
		return 0, withMessage(ErrInvalidParam, fmt.Sprintf("Query parameter %s must be a positive integer.", name))
	}
	return n, nil
}

// stringParam returns an ASCII string parameter, or def when absent. With
// allowed, the value must be one of them.
func stringParam(q url.Values, name, def string, allowed ...string) (string, error) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	v := vs[0]
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return "", withMessage(ErrBadRequest, fmt.Sprintf("Query parameter '%s' must be ascii", name))
		}
	}
	if allowed == nil {
		return v, nil
	}
	for _, a := range allowed {
		if v == a {
			return v, nil
		}
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = "'" + a + "'"
	}
	return "", withMessage(ErrInvalidParam,
		fmt.Sprintf("Query parameter '%s' must be one of [%s]", name, strings.Join(quoted, ", ")))
}

// page is a window of a list: from and limit as given, already validated.
type page struct {
	from, limit int64
}

// pageParams reads from and limit.
func pageParams(q url.Values) (page, error) {
	from, err := intParam(q, "from", 0)
	if err != nil {
		return page{}, err
	}
	limit, err := intParam(q, "limit", 100)
	if err != nil {
		return page{}, err
	}
	return page{from: from, limit: limit}, nil
}

// dirParam reads dir and reports whether it is backwards. Synapse's error
// lists its Direction enum in declaration order, backwards first.
func dirParam(q url.Values) (backwards bool, err error) {
	dir, err := stringParam(q, "dir", "f", "b", "f")
	return dir == "b", err
}

// window returns the bounds of the page in a list of total items, and the
// next page's token ("" when from+limit reaches total: Synapse's rule).
func (p page) window(total int) (start, end int, next string) {
	t := int64(total)
	s := min(p.from, t)
	e := t
	if p.limit < t-s {
		e = s + p.limit
	}
	if p.from < t && p.limit < t-p.from {
		next = strconv.FormatInt(p.from+(e-s), 10)
	}
	return int(s), int(e), next
}
