// Package synapsefixture gives tests the recording of a real Synapse 1.92
// federation sender (data/README.md tells the whole story): the sending
// homeserver's database restored into a real PostgreSQL, a real
// redis-server, the replication traffic Synapse published on it, and the
// transactions Synapse's own sender delivered.
package synapsefixture

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/prereq"
)

// The two recorded databases.
const (
	// Main is hs1's database at the end of the main recording, after
	// Synapse's sender delivered everything.
	Main = "hs1.sql"
	// Unsent is hs1's database from the second recording, in which no
	// sender ran: every PDU and EDU is still owed.
	Unsent = "unsent/hs1-unsent.sql"
)

// Server names of the recording.
const (
	HS1 = "localhost:28481" // the sending homeserver
	HS2 = "localhost:28482"
	HS3 = "localhost:28483"
)

// Dir is the absolute path of the fixture's files.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "data")
}

// Path is the absolute path of one of the fixture's files.
func Path(name string) string { return filepath.Join(Dir(), filepath.FromSlash(name)) }

// SigningKey is hs1's signing key (signing.key): the key Synapse signed
// with, which fedsender signs with in its place.
func SigningKey(t testing.TB) xmatrix.SigningKey {
	t.Helper()
	key, err := xmatrix.LoadKeyFile(Path("signing.key"))
	if err != nil {
		t.Fatalf("synapsefixture: %v", err)
	}
	return key
}

var (
	templates   = map[string]string{}
	templatesMu sync.Mutex
	dbSeq       int
)

// Database returns the connection string of a new database holding the
// dump (Main or Unsent), dropped when t ends. The dump is restored once per
// test process into a template database, which each test copies.
func Database(t testing.TB, dump string) string {
	t.Helper()
	base := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("synapsefixture: connect to PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)

	templatesMu.Lock()
	defer templatesMu.Unlock()
	tmpl, ok := templates[dump]
	if !ok {
		tmpl = fmt.Sprintf("synapse_fixture_%d_%d", os.Getpid(), len(templates))
		if err := restore(ctx, admin, base, tmpl, dump); err != nil {
			t.Fatalf("synapsefixture: restore %s: %v", dump, err)
		}
		templates[dump] = tmpl
	}
	dbSeq++
	name := fmt.Sprintf("synapse_%d_%d", os.Getpid(), dbSeq)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl); err != nil {
		t.Fatalf("synapsefixture: copy %s: %v", tmpl, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return replaceDBName(base, name)
}

// Restore is Database for programs (the benchmark): it creates database
// name on the server at adminURL (a superuser's connection string) and
// loads the dump (Main or Unsent) into it, and returns its URL.
func Restore(ctx context.Context, adminURL, name, dump string) (string, error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("synapsefixture: connect to PostgreSQL: %w", err)
	}
	defer admin.Close(ctx)
	if err := restore(ctx, admin, adminURL, name, dump); err != nil {
		return "", fmt.Errorf("synapsefixture: restore %s: %w", dump, err)
	}
	return replaceDBName(adminURL, name), nil
}

// restore creates database name as Synapse wants it (C collation) and
// loads the dump with psql, stopping at the first error.
func restore(ctx context.Context, admin *pgx.Conn, base, name, dump string) error {
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+
		" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		return err
	}
	bin, err := prereq.Local().Find(prereq.Postgres)
	if err != nil {
		return err
	}
	url := replaceDBName(base, name)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", Path(dump))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql: %w\n%s", err, out)
	}
	return nil
}

// replaceDBName sets dbname in a connection string, either form.
func replaceDBName(url, name string) string {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		cfg, err := pgxpool.ParseConfig(url)
		if err == nil {
			i := strings.LastIndex(url, "/"+cfg.ConnConfig.Database)
			if i >= 0 {
				return url[:i+1] + name + url[i+1+len(cfg.ConnConfig.Database):]
			}
		}
		return url
	}
	var fields []string
	for _, f := range strings.Fields(url) {
		if !strings.HasPrefix(f, "dbname=") {
			fields = append(fields, f)
		}
	}
	return strings.Join(append(fields, "dbname="+name), " ")
}

// Redis starts a redis-server on a free port for t and returns its URL
// (redis://127.0.0.1:port/0). Missing redis-server fails t, saying how to
// install it, unless FEDSENDER_TEST_SKIP names redis.
func Redis(t testing.TB) string {
	t.Helper()
	return RedisAt(t, 0)
}

// RedisAt starts a redis-server on port (a Redis that a test stopped, say
// with SHUTDOWN NOSAVE, coming back; 0: a free port) and returns its URL.
func RedisAt(t testing.TB, port int) string {
	t.Helper()
	env := prereq.Local()
	env.OptOut(t, prereq.Redis)
	bin, err := env.Find(prereq.Redis)
	if err != nil {
		env.Fail(t, prereq.Redis, err)
	}
	url, stop, err := startRedis(bin, t.TempDir(), port)
	if err != nil {
		t.Fatalf("synapsefixture: %v", err)
	}
	t.Cleanup(stop)
	return url
}

// StartRedis is Redis for programs (the benchmark): a redis-server keeping
// its files in dir, and the function that stops it.
func StartRedis(dir string) (url string, stop func(), err error) {
	bin, err := prereq.Local().Find(prereq.Redis)
	if err != nil {
		return "", nil, err
	}
	return startRedis(bin, dir, 0)
}

// startRedis starts redis-server on port, or on a free port (trying a few)
// when port is 0.
func startRedis(bin, dir string, port int) (string, func(), error) {
	for attempt := 0; ; attempt++ {
		p := port
		if p == 0 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, err
			}
			p = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(p), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir)
		if err := cmd.Start(); err != nil {
			return "", nil, fmt.Errorf("start redis-server: %w", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", p)
		if waitRedis(url, exited) {
			return url, func() { _ = cmd.Process.Kill(); <-exited }, nil
		}
		_ = cmd.Process.Kill()
		<-exited
		if port != 0 || attempt == 3 {
			return "", nil, fmt.Errorf("redis-server did not start on 127.0.0.1:%d", p)
		}
	}
}

func waitRedis(url string, exited <-chan struct{}) bool {
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Line is one message of a recorded replication log: when Synapse
// published it (unix ms), on which channel, and the command line.
type Line struct {
	T       int64
	Channel string
	Command string
}

// ReplicationLog reads a recorded replication log ("redis-replication.log"
// or "unsent/redis-replication.log").
func ReplicationLog(t testing.TB, name string) []Line {
	t.Helper()
	f, err := os.Open(Path(name))
	if err != nil {
		t.Fatalf("synapsefixture: %v", err)
	}
	defer f.Close()
	var lines []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		parts := strings.SplitN(sc.Text(), " ", 3)
		if len(parts) != 3 {
			t.Fatalf("synapsefixture: %s line %d: want <ms> <channel> <command>", name, n)
		}
		ms, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			t.Fatalf("synapsefixture: %s line %d: %v", name, n, err)
		}
		lines = append(lines, Line{T: ms, Channel: parts[1], Command: parts[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("synapsefixture: %s: %v", name, err)
	}
	return lines
}

// Publish publishes the lines on the Redis at url, in order, as Synapse
// did (without waiting between them).
func Publish(t testing.TB, url string, lines []Line) {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("synapsefixture: %v", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, l := range lines {
		if err := c.Publish(ctx, l.Channel, l.Command).Err(); err != nil {
			t.Fatalf("synapsefixture: publish: %v", err)
		}
	}
}

// Transaction is one transaction Synapse's sender delivered, as recorded.
type Transaction struct {
	T           int64  `json:"t"`
	Destination string `json:"destination"`
	TxnID       string `json:"txn_id"`
	Origin      string `json:"origin"`
	Body        struct {
		Origin         string            `json:"origin"`
		OriginServerTS int64             `json:"origin_server_ts"`
		PDUs           []json.RawMessage `json:"pdus"`
		EDUs           []struct {
			EDUType string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		} `json:"edus"`
	} `json:"body"`
	Status int `json:"status"`
	// Response is the receiver's answer: its pdus map is keyed by the
	// event ids the receiver computed (the PDUs carry none).
	Response struct {
		PDUs map[string]json.RawMessage `json:"pdus"`
	} `json:"response"`
}

// Transactions reads what Synapse's sender delivered to hs2 or hs3 in the
// main recording ("transactions-hs2.jsonl" or "transactions-hs3.jsonl").
func Transactions(t testing.TB, name string) []Transaction {
	t.Helper()
	f, err := os.Open(Path(name))
	if err != nil {
		t.Fatalf("synapsefixture: %v", err)
	}
	defer f.Close()
	var txns []Transaction
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for n := 1; sc.Scan(); n++ {
		var tx Transaction
		if err := json.Unmarshal(sc.Bytes(), &tx); err != nil {
			t.Fatalf("synapsefixture: %s line %d: %v", name, n, err)
		}
		txns = append(txns, tx)
	}
	return txns
}
