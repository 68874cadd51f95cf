package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every spelling of a secret the configurations below carry. None may
// appear in anything fedsender prints.
var secretWords = []string{"wr0ng", "pa55", "tok3n", "pg-s3cret", "pg s3cret", "kv-s3cret"}

// runBinary runs the real fedsender with args until it exits (within a
// minute) and returns its exit code and everything it printed.
func runBinary(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary(t), args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("fedsender %s did not exit within a minute:\n%s", strings.Join(args, " "), out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	case err != nil:
		t.Fatal(err)
	}
	return 0, string(out)
}

func assertNoSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, s := range secretWords {
		if strings.Contains(out, s) {
			t.Errorf("%s printed the secret %q:\n%s", what, s, out)
		}
	}
}

// TestSecretsNeverPrinted: nats.url and postgres.url carry passwords and
// tokens; neither the start-up log (text or JSON) nor the error of a
// refused connection shows them, and the error still names the setting,
// the server and the cause.
func TestSecretsNeverPrinted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	ns := startNATSServer(t, `listen: "127.0.0.1:-1"
authorization { users: [ {user: fedsender, password: "the-right-one"} ] }
`)
	port := ns.Addr().String()
	for _, format := range []string{"text", "json"} {
		t.Run("run/"+format, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "fedsender.yaml")
			writeFile(t, conf, fmt.Sprintf(`server_name: origin.test
data_dir: %s
log: {format: %s}
nats: {url: "nats://fedsender:wr0ng%%2Fpa55@%s,nats://tok3n@%s"}
admin: {listen: "127.0.0.1:0"}
metrics: {listen: ""}
postgres: {url: "postgres://fs:pg-s3cret@127.0.0.1:1/fs?sslmode=disable"}
`, filepath.Join(dir, "data"), format, port, port))
			code, out := runBinary(t, "run", "--config", conf)
			if code == 0 {
				t.Fatalf("fedsender run started against a server that refuses its credentials:\n%s", out)
			}
			assertNoSecret(t, "fedsender run", out)
			for _, want := range []string{"nats.url", "nats://fedsender:***@" + port, "nats://***@" + port, "Authorization Violation"} {
				if !strings.Contains(out, want) {
					t.Errorf("fedsender run's output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	// Running, with PostgreSQL unreachable: the read model logs its
	// retries, with pgx's error.
	for name, dsn := range map[string]string{
		"url":       "postgres://fs:pg-s3cret@127.0.0.1:1/fs?sslmode=disable",
		"key=value": "host=127.0.0.1 port=1 user=fs password='pg s3cret' dbname=fs sslmode=disable",
	} {
		t.Run("run with PostgreSQL down/"+name, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "fedsender.yaml")
			writeFile(t, conf, fmt.Sprintf("server_name: origin.test\ndata_dir: %s\nlog: {format: json}\n"+
				"nats: {listen: \"\"}\nadmin: {listen: \"\"}\nmetrics: {listen: \"\"}\npostgres: {url: %q}\n",
				filepath.Join(dir, "data"), dsn))
			out := runUntilLogged(t, "cannot migrate PostgreSQL", "run", "--config", conf)
			assertNoSecret(t, "fedsender run", out)
		})
	}

	t.Run("destinations --server", func(t *testing.T) {
		code, out := runBinary(t, "destinations", "list", "--server", "nats://fedsender:wr0ng@"+port)
		if code == 0 || !strings.Contains(out, "nats://fedsender:***@"+port) || !strings.Contains(out, "Authorization Violation") {
			t.Errorf("exit %d, want 1 naming the redacted server and the cause:\n%s", code, out)
		}
		assertNoSecret(t, "fedsender destinations", out)
	})

	for _, tc := range []struct{ name, dsn, want string }{
		{"url", "postgres://fs:pg-s3cret@127.0.0.1:1/fs?sslmode=disable", "failed to connect"},
		{"query", "postgres://fs@127.0.0.1:1/fs?password=kv-s3cret&sslmode=disable", "failed to connect"},
		{"key=value", "host=127.0.0.1 port=1 user=fs password='pg s3cret' dbname=fs sslmode=disable", "failed to connect"},
		{"bad url", "postgres://fs:pg-s3cret@127.0.0.1:notaport/fs", "postgres.url"},
	} {
		t.Run("migrate/"+tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "fedsender.yaml")
			writeFile(t, conf, fmt.Sprintf("server_name: origin.test\npostgres: {url: %q}\n", tc.dsn))
			code, out := runBinary(t, "migrate", "--config", conf)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want 1 and %q:\n%s", code, tc.want, out)
			}
			assertNoSecret(t, "fedsender migrate", out)
		})
	}
}

// runUntilLogged runs the real fedsender with args until it prints want
// (within a minute), then stops it with SIGTERM and returns everything it
// printed.
func runUntilLogged(t *testing.T, want string, args ...string) string {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "fedsender.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(binary(t), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	var out []byte
	eventually(t, time.Minute, func() bool {
		out, _ = os.ReadFile(logf.Name())
		return strings.Contains(string(out), want)
	}, "fedsender never printed %q:\n%s", want, out)
	return string(out)
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
