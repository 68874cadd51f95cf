package redact_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/fedsender/fedsender/internal/redact"
)

func TestURL(t *testing.T) {
	check(t, "URL", redact.URL, []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://fedsender:s3cret@nats:4222", "nats://fedsender:***@nats:4222"},
		{"nats://s3cret@nats:4222", "nats://***@nats:4222"},
		{"nats://fedsender:s%2F3%40cret@nats:4222", "nats://fedsender:***@nats:4222"},
		{"nats://fed%3Asender:s3cret@nats", "nats://fed%3Asender:***@nats"},
		{"nats://fedsender:s3@cr/et@nats:4222/x", "nats://fedsender:***@nats:4222/x"},
		{"nats://a:s3cret@n1:4222,nats://s3cret@n2:4222,nats://n3:4222", "nats://a:***@n1:4222,nats://***@n2:4222,nats://n3:4222"},
		{"tls://a:s3cret@n1:4222, tls://a:s3cret@n2:4222", "tls://a:***@n1:4222, tls://a:***@n2:4222"},
		{"a:s3cret@n1:4222", "a:***@n1:4222"},
		{"postgres://fs:s3cret@db:5432/fs?sslmode=disable", "postgres://fs:***@db:5432/fs?sslmode=disable"},
		{"postgres://fs@db/fs?sslmode=disable&password=s3cret&x=1", "postgres://fs@db/fs?sslmode=disable&password=***&x=1"},
		{"postgres://fs@db/fs?PASSWORD=s3cret", "postgres://fs@db/fs?PASSWORD=***"},
		{"postgres://fs:s3cret@db:notaport/fs", "postgres://fs:***@db:notaport/fs"},
		{"", ""},
	})
}

func TestDSN(t *testing.T) {
	check(t, "DSN", redact.DSN, []struct{ in, want string }{
		{"host=db user=fs password=s3cret dbname=fs", "host=db user=fs password=*** dbname=fs"},
		{"host=db password = s3cret", "host=db password = ***"},
		{"password='s3 cret' host=db", "password=*** host=db"},
		{`password='s3\' cret' host=db`, "password=*** host=db"},
		{"password=s3&cret host=db", "password=*** host=db"},
		{"host=db sslpassword=s3cret", "host=db sslpassword=s3cret"}, // not libpq's password
		{"host=db user=fs", "host=db user=fs"},
		{"postgres://fs:s3cret@db/fs", "postgres://fs:***@db/fs"},
		{"postgresql://fs@db/fs?password=s3cret", "postgresql://fs@db/fs?password=***"},
	})
}

func TestText(t *testing.T) {
	check(t, "Text", redact.Text, []struct{ in, want string }{
		{"connect to nats://a:s3cret@n1:4222,nats://s3cret@n2:4222: nats: Authorization Violation",
			"connect to nats://a:***@n1:4222,nats://***@n2:4222: nats: Authorization Violation"},
		{`parse "postgres://fs:s3cret@db:x/fs": invalid port`, `parse "postgres://fs:***@db:x/fs": invalid port`},
		{"cannot parse `host=db password='s3 cret'`: bad", "cannot parse `host=db password=***`: bad"},
		{"dial postgres://fs@db/fs and nats://tok@n1", "dial postgres://fs@db/fs and nats://***@n1"},
		{"send to @alice:example.org failed", "send to @alice:example.org failed"},
		{"https://matrix.example.org/_matrix/federation/v1/send/1", "https://matrix.example.org/_matrix/federation/v1/send/1"},
	})
}

func check(t *testing.T, name string, f func(string) string, cases []struct{ in, want string }) {
	t.Helper()
	for _, tc := range cases {
		if got := f(tc.in); got != tc.want {
			t.Errorf("%s(%q) = %q, want %q", name, tc.in, got, tc.want)
		}
	}
}

func TestError(t *testing.T) {
	if redact.Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
	err := redact.Error(fmt.Errorf("connect to nats://a:s3cret@n1: %w", fs.ErrPermission))
	if got, want := err.Error(), "connect to nats://a:***@n1: permission denied"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("the redacted error no longer wraps its cause")
	}
}
