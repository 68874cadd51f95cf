package redact

import (
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "***"

// URL returns s, one URL or a comma-separated list of them (as nats.url
// takes), with the password of each URL's userinfo replaced by Mask, or the
// whole userinfo when it is a bare NATS token (nats://token@host). A
// password= query parameter is masked too. Text that is not a URL is returned as it
// is, except for what Text would mask.
func URL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = oneURL(p)
	}
	return strings.Join(parts, ",")
}

// oneURL masks the userinfo of one URL. It does not use net/url: a
// password with an unescaped '@' or '/' is still a password, and a URL
// that does not parse must be masked all the same.
func oneURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	} else {
		scheme += "://"
	}
	// The authority ends at the first '/', '?' or '#' after the last '@'
	// before any of them, so that an '@' inside the password is covered.
	end := len(rest)
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if j := strings.IndexAny(rest[at:], "/?#"); j >= 0 {
			end = at + j
		}
	} else if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		end = j
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		authority = userinfo(scheme, authority[:at]) + authority[at:]
	}
	return scheme + authority + queryPassword.ReplaceAllString(tail, "${1}"+Mask)
}

// userinfo masks the password of user:password. Alone, the userinfo of a
// NATS URL is a token, masked entirely; that of a PostgreSQL URL is a user
// name.
func userinfo(scheme, u string) string {
	if user, _, ok := strings.Cut(u, ":"); ok {
		return user + ":" + Mask
	}
	if strings.HasPrefix(strings.ToLower(scheme), "postgres") {
		return u
	}
	return Mask
}

// queryPassword is a password parameter in a URL's query.
var queryPassword = regexp.MustCompile(`(?i)([?&]password=)[^&#]*`)

// DSN returns a PostgreSQL connection string with its password masked:
// a postgres:// URL as URL does, or a libpq key=value string, whose
// password value may be quoted ('it”s' or 'a\'b').
func DSN(s string) string {
	if strings.Contains(s, "://") {
		return URL(s)
	}
	return kvPassword.ReplaceAllString(s, "${1}"+Mask)
}

// kvPassword is password=value in a key=value string or in free text: the
// value is quoted (a backslash escapes a quote) or runs to the next space.
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\S*)`)

// urlUserinfo is scheme://userinfo@ inside free text: the userinfo runs
// to the last '@' before white space, a slash or a quote.
var urlUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#"'<>]*)@`)

// Text masks the secrets in free text, such as an error message that quotes
// a URL or a DSN: the userinfo of every scheme://user:password@ URL, and the
// value of every password=.
func Text(s string) string {
	if strings.Contains(s, "@") {
		s = urlUserinfo.ReplaceAllStringFunc(s, func(m string) string {
			sub := urlUserinfo.FindStringSubmatch(m)
			return sub[1] + userinfo(sub[1], sub[2]) + "@"
		})
	}
	if strings.Contains(strings.ToLower(s), "password") {
		s = kvPassword.ReplaceAllString(s, "${1}"+Mask)
	}
	return s
}

// Error returns err with Text applied to its message; errors.Is and
// errors.As still see err. It returns nil for nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return redacted{err}
}

type redacted struct{ err error }

func (r redacted) Error() string { return Text(r.err.Error()) }
func (r redacted) Unwrap() error { return r.err }
