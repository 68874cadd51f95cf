package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
)

// TestMigrate: `fedsender migrate` applies the migrations once; a second
// run applies none.
func TestMigrate(t *testing.T) {
	srv := pgtest.Own(t)
	schema := pgtest.Schema(t, srv.URL)
	path := filepath.Join(t.TempDir(), "fedsender.yaml")
	cfg := "server_name: a.org\npostgres:\n  url: " + srv.URL + "\n  schema: " + schema + "\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"applied migrations [1 2 3 4 5]", "applied migrations []"} {
		code, out, errs := runCmd(t, "", "migrate", "--config", path)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("migrate: exit %d, stdout %q (want %q), stderr %q", code, out, want, errs)
		}
	}
}

// TestPostgresCommandsNeedAURL: without postgres.url the commands say so.
func TestPostgresCommandsNeedAURL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fedsender.yaml")
	if err := os.WriteFile(path, []byte("server_name: a.org\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"migrate", "--config", path}, {"projection", "rebuild", "--config", path}} {
		code, _, errs := runCmd(t, "", args...)
		if code != 1 || !strings.Contains(errs, "postgres.url is empty") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}
