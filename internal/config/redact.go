package config

import (
	"log/slog"
	"reflect"

	"github.com/fedsender/fedsender/internal/redact"
)

// redacted replaces a secret's value in LogValue's output.
const redacted = "REDACTED"

// Redacted returns a copy of c with every secret blanked (admin.token, and
// any field tagged secret:"true") and the userinfo of nats.url masked
// (secret:"userinfo"), for printing or serving it.
func (c Config) Redacted() Config {
	for _, s := range loadSchema().settings {
		if s.secret {
			s.field(&c).SetZero()
		}
	}
	c.NATS.URL = redact.URL(c.NATS.URL)
	c.Synapse.RedisURL = redact.URL(c.Synapse.RedisURL)
	return c
}

// LogValue renders c as nested groups keyed by YAML names, so that
// slog.Any("config", c) logs every setting. A secret that is set appears
// as "REDACTED", one that is not set as "", so the log still tells whether
// the admin API is enabled without revealing its token.
func (c Config) LogValue() slog.Value {
	return logGroup(reflect.ValueOf(c))
}

func logGroup(v reflect.Value) slog.Value {
	attrs := make([]slog.Attr, 0, v.NumField())
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		var value slog.Value
		switch {
		case fv.Kind() == reflect.Struct:
			value = logGroup(fv)
		case isSecret(f) && !fv.IsZero():
			value = slog.StringValue(redacted)
		case f.Tag.Get("secret") == "userinfo":
			value = slog.StringValue(redact.URL(fv.String()))
		default:
			value = slog.AnyValue(fv.Interface())
		}
		attrs = append(attrs, slog.Attr{Key: yamlName(f), Value: value})
	}
	return slog.GroupValue(attrs...)
}
