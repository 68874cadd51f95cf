// Package pgtest gives tests a real PostgreSQL: the server named by
// FEDSENDER_TEST_POSTGRES_URL, or a throwaway one started from the
// installed binaries (initdb and pg_ctl, on a unix socket in a temporary
// directory). Missing binaries fail the tests, saying how to install them,
// unless FEDSENDER_TEST_SKIP names postgres (see package prereq).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/test/prereq"
)

// EnvURL names the variable pointing the tests at an existing server.
const EnvURL = "FEDSENDER_TEST_POSTGRES_URL"

// Server is a throwaway PostgreSQL cluster owned by an unprivileged user.
type Server struct {
	bin, dir string
	cred     *syscall.Credential
	// URL is its libpq connection string (unix socket, trust auth).
	URL string
}

// Start initialises a cluster in a new temporary directory and starts it.
// As root, the cluster belongs to nobody (initdb refuses root). Without the
// server binaries its error wraps prereq.ErrMissing.
func Start() (*Server, error) {
	bin, err := prereq.Local().Find(prereq.Postgres)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fedsender-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs the nobody user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.URL = "host=" + dir + " port=5432 user=postgres dbname=postgres sslmode=disable"
	if err := s.Restart(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) run(prog string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s: %w\n%s", prog, err, out)
	}
	return nil
}

// Restart starts the server (again), and waits until it accepts connections.
func (s *Server) Restart() error {
	return s.run("pg_ctl", "start", "-w", "-D", s.data(), "-l", filepath.Join(s.dir, "log"),
		"-o", "-k "+s.dir+" -c listen_addresses='' -c fsync=off -c max_connections=200")
}

// Stop stops the server at once (fast shutdown), keeping its data.
func (s *Server) Stop() error {
	return s.run("pg_ctl", "stop", "-w", "-m", "fast", "-D", s.data())
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	_ = s.Stop()
	os.RemoveAll(s.dir)
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Main runs a package's tests, then stops the shared throwaway server if
// one was started. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

// URL returns the connection string of a PostgreSQL for t: the one named by
// FEDSENDER_TEST_POSTGRES_URL, else a throwaway server shared by the
// package's tests (see Main). It fails t if there is none, or skips it
// when FEDSENDER_TEST_SKIP names postgres.
func URL(t testing.TB) string {
	t.Helper()
	prereq.Local().OptOut(t, prereq.Postgres)
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		Unavailable(t, sharedErr)
	}
	return shared.URL
}

// Own returns a throwaway server for t alone (to stop and restart it),
// even when FEDSENDER_TEST_POSTGRES_URL is set.
func Own(t testing.TB) *Server {
	t.Helper()
	prereq.Local().OptOut(t, prereq.Postgres)
	s, err := Start()
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(s.Close)
	return s
}

// Unavailable fails t because no server could be started: when the
// binaries are missing, saying how to install them.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, prereq.ErrMissing) {
		prereq.Local().Fail(t, prereq.Postgres, err)
	}
	t.Fatalf("PostgreSQL for the tests: %v", err)
}

var schemaSeq atomic.Int64

// Schema returns a schema name no other test uses, and drops it when t ends.
func Schema(t testing.TB, url string) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, schemaSeq.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return
		}
		defer pool.Close()
		_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
	})
	return name
}
