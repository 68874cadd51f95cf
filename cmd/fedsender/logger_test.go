package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestLoggerMasksSecrets: whatever a component logs, a URL's password or
// token and a DSN's password do not reach the log, in either format.
func TestLoggerMasksSecrets(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log := newLogger("info", format, &buf)
		log.Error("nats: reconnect to nats://fedsender:pa55@n1:4222 failed",
			"url", "nats://t0ken@n2:4222",
			"error", errors.New(`cannot parse "host=db password='pg s3cret'"`),
			"group", map[string]string{"dsn": "postgres://fs:pg-s3cret@db/fs"})
		out := buf.String()
		for _, secret := range []string{"pa55", "t0ken", "s3cret"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s log shows %q: %s", format, secret, out)
			}
		}
		if !strings.Contains(out, "nats://fedsender:***@n1:4222") || !strings.Contains(out, "nats://***@n2:4222") {
			t.Errorf("%s log lost the server addresses: %s", format, out)
		}
	}
}
