package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Query parameters (from parseQuery over HTTP, jsonParams from a micro
// request) are read the way Synapse's parse_integer, parse_string and
// parse_enum read them: the first value counts, and the error texts are
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

// next returns the next page's token in a list of total items: from plus
// the page's length, and "" when from+limit reaches total (Synapse's rule).
func (p page) next(total int) string {
	t := int64(total)
	if p.from < t && p.limit < t-p.from {
		return strconv.FormatInt(p.from+p.limit, 10)
	}
	return ""
}

// maxRequestBody bounds a micro request's JSON.
const maxRequestBody = 64 << 10

// jsonParams reads a micro request's body, a JSON object of the HTTP API's
// parameters, into query values, so that both surfaces check them with the
// same code and answer the same errors. A string is taken as is and a
// number as its digits (so {"from": -5} and {"from": "-5"} both get
// Synapse's "must be a positive integer"); null is absent. An empty body
// is an empty object. Keys the endpoint does not take are refused, so a
// typo is not silently ignored.
func jsonParams(data []byte, allowed ...string) (url.Values, error) {
	q := url.Values{}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return q, nil
	}
	if len(data) > maxRequestBody {
		return nil, withMessage(ErrNotJSON, fmt.Sprintf("Content not JSON: the request is over %d bytes", maxRequestBody))
	}
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || dec.More() {
		reason := "trailing data after the object"
		if err != nil {
			reason = err.Error()
		}
		return nil, withMessage(ErrNotJSON, "Content not JSON: expected an object such as {\"destination\": \"matrix.org\"}: "+reason)
	}
	if obj == nil {
		return nil, withMessage(ErrNotJSON, "Content not JSON: expected an object, got null")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return nil, withMessage(ErrInvalidParam, fmt.Sprintf("Unknown parameter '%s': this endpoint takes %s", k, strings.Join(allowed, ", ")))
		}
		raw := bytes.TrimSpace(obj[k])
		switch {
		case string(raw) == "null":
			continue
		case raw[0] == '"':
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, withMessage(ErrNotJSON, fmt.Sprintf("Content not JSON: parameter '%s': %v", k, err))
			}
			q.Set(k, v)
		case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
			q.Set(k, string(raw))
		default:
			return nil, withMessage(ErrInvalidParam, fmt.Sprintf("Parameter '%s' must be a string or a number", k))
		}
	}
	return q, nil
}

// requiredName returns the destination a micro request names.
func requiredName(q url.Values) (string, error) {
	vs, ok := q["destination"]
	if !ok {
		return "", withMessage(ErrMissingParam, "Missing string parameter 'destination'")
	}
	return vs[0], nil
}
