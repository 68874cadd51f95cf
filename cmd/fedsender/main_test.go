package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestKeygenWritesASynapseKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	code, out, errs := runCmd(t, "", "keygen", "--server-name", "example.org", "--out", path)
	if code != 0 {
		t.Fatalf("keygen exited %d: %s", code, errs)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(data)); len(f) != 3 || f[0] != "ed25519" {
		t.Fatalf("key file %q is not `ed25519 <version> <seed>`", data)
	}
	key, err := xmatrix.ParseKeyFile(data)
	if err != nil {
		t.Fatalf("written key does not parse: %v", err)
	}
	if !strings.Contains(out, key.KeyID()) {
		t.Errorf("output %q does not name the key id %s", out, key.KeyID())
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	// Never overwrite a key.
	if code, _, errs := runCmd(t, "", "keygen", "--server-name", "example.org", "--out", path); code == 0 || !strings.Contains(errs, "--out") {
		t.Fatalf("keygen over an existing file: exit %d, %q", code, errs)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, key string }{
		{"server_name: a.org\nsigning_key_path: /nonexistent/key\n", "signing_key_path"},
		{"server_name: a.org\nbackoff:\n  min_interval: soon\n", "backoff.min_interval"},
		{"server_name: a.org\nfederation:\n  ip_range_allowlist: [10.0.0.0/33]\n", "federation.ip_range_allowlist"},
		{"server_name: a.org\nnats:\n  bogus: 1\n", "nats.bogus"},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCmd(t, "", "run", "--config", path)
		if code == 0 || !strings.Contains(errs, tc.key) {
			t.Errorf("run with %q: exit %d, stderr %q; want an error naming %s", tc.yaml, code, errs, tc.key)
		}
	}
}

func TestPublishRefusesAnInvalidLineBeforePublishing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	// Port 1 has no NATS server: a valid file would fail to connect, so the
	// error below proves validation came first.
	if err := os.WriteFile(path, []byte("server_name: a.org\nnats:\n  url: nats://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := `{"room_id":"!r:a.org","event_id":"$1","pdu":{},"destinations":["b.org"]}` + "\n" +
		`{"room_id":"!r:a.org","event_id":"$2","pdu":{},"destinations":["bad name"]}` + "\n"
	code, _, errs := runCmd(t, in, "publish", "--config", path)
	if code == 0 || !strings.Contains(errs, "line 2") || !strings.Contains(errs, "destinations[0]") {
		t.Fatalf("publish: exit %d, stderr %q; want an error naming line 2 and destinations[0]", code, errs)
	}
}
