// Package redact hides the secrets that connection strings carry: the
// userinfo of NATS and PostgreSQL URLs (user:password@, token@) and the
// password of a libpq key=value string. fedsender passes every URL and DSN
// through it before the value reaches a log line or an error, and its
// loggers pass every string attribute through Text as a last line of
// defence.
package redact
