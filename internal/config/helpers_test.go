package config

import (
	"os"
	"strings"
	"testing"
)

// minimalYAML is the smallest file that passes Validate.
const minimalYAML = "server_name: example.org\n"

// mustParse parses data and environ and fails the test on any error.
func mustParse(t *testing.T, data string, environ ...string) Config {
	t.Helper()
	c, err := Parse([]byte(data), environ)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", data, environ, err)
	}
	return c
}

// wantErr fails the test unless err is non-nil and its message contains
// every one of want.
func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// writeFile creates a file with some content in a fresh temporary
// directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := t.TempDir() + "/" + name
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
