package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRedacted(t *testing.T) {
	c := valid()
	c.Admin.Token = "s3cret"
	r := c.Redacted()
	if r.Admin.Token != "" {
		t.Errorf("Redacted kept the token %q", r.Admin.Token)
	}
	if c.Admin.Token != "s3cret" {
		t.Error("Redacted modified its receiver")
	}
	r.Admin.Token = c.Admin.Token
	if r.ServerName != c.ServerName || r.Queue != c.Queue {
		t.Error("Redacted changed more than the secrets")
	}
}

func TestLogValueHidesToken(t *testing.T) {
	for _, tc := range []struct {
		token string
		want  string
	}{
		{"s3cret", "config.admin.token=REDACTED"},
		{"", `config.admin.token=""`},
	} {
		c := valid()
		c.Admin.Token = tc.token
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("starting", "config", c)
		out := buf.String()
		if tc.token != "" && strings.Contains(out, tc.token) {
			t.Errorf("log output contains the token: %s", out)
		}
		for _, w := range []string{tc.want, "config.server_name=example.org", "config.backoff.min_interval=10m0s", "config.nats.max_store=10737418240"} {
			if !strings.Contains(out, w) {
				t.Errorf("log output lacks %q: %s", w, out)
			}
		}
	}
}

func TestLogValueJSON(t *testing.T) {
	c := valid()
	c.Admin.Token = "s3cret"
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	if out := buf.String(); strings.Contains(out, "s3cret") || !strings.Contains(out, `"admin":{"listen":"127.0.0.1:8008","token":"REDACTED"}`) {
		t.Errorf("unexpected JSON log: %s", out)
	}
}

// TestRedactedPostgresURL: postgres.url may carry a password, so it is a
// secret like admin.token.
func TestRedactedPostgresURL(t *testing.T) {
	c := valid()
	c.Postgres.URL = "postgres://fs:pa55word@db/fs"
	if r := c.Redacted(); r.Postgres.URL != "" || r.Postgres.Schema != "fedsender" {
		t.Errorf("Redacted: postgres %+v", r.Postgres)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("starting", "config", c)
	if out := buf.String(); strings.Contains(out, "pa55word") || !strings.Contains(out, "config.postgres.url=REDACTED") {
		t.Errorf("log output: %s", out)
	}
}

// TestRedactedNATSURL: nats.url stays readable, without the passwords and
// tokens of its URLs.
func TestRedactedNATSURL(t *testing.T) {
	c := valid()
	c.NATS.URL = "nats://fedsender:pa55@n1:4222,nats://t0ken@n2:4222"
	const want = "nats://fedsender:***@n1:4222,nats://***@n2:4222"
	if r := c.Redacted(); r.NATS.URL != want {
		t.Errorf("Redacted: nats.url %q, want %q", r.NATS.URL, want)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	if out := buf.String(); strings.Contains(out, "pa55") || strings.Contains(out, "t0ken") || !strings.Contains(out, `"url":"`+want+`"`) {
		t.Errorf("log output: %s", out)
	}
}
