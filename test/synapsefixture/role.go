package synapsefixture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fedsender/fedsender/internal/synapse/grants"
)

// Role creates a login role on the fixture database dbURL (from
// Database) holding exactly the feed's grants (grants.Statements)
// and CONNECT on that database, and returns dbURL logged in as that role.
// The role is dropped when t ends, before the database.
func Role(t testing.TB, dbURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("synapsefixture: connect to %s: %v", dbURL, err)
	}
	defer conn.Close(ctx)
	db := conn.Config().Database
	role := "fedsender_" + db
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	password := hex.EncodeToString(secret)
	stmts := append([]string{
		"CREATE ROLE " + pgx.Identifier{role}.Sanitize() + " LOGIN PASSWORD '" + password + "'",
		"GRANT CONNECT ON DATABASE " + pgx.Identifier{db}.Sanitize() + " TO " + pgx.Identifier{role}.Sanitize(),
	}, grants.Statements("public", role)...)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("synapsefixture: %s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		// The role's sessions end with the test's pools; DROP OWNED revokes
		// its privileges here and on the database, so it can be dropped.
		_, _ = c.Exec(ctx, "DROP OWNED BY "+pgx.Identifier{role}.Sanitize())
		_, _ = c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
	})
	return withLogin(dbURL, role, password)
}

// withLogin sets the user and password of a connection string (either
// form).
func withLogin(conn, user, password string) string {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			panic(fmt.Sprintf("synapsefixture: connection string: %v", err))
		}
		u.User = url.UserPassword(user, password)
		return u.String()
	}
	var fields []string
	for _, f := range strings.Fields(conn) {
		if !strings.HasPrefix(f, "user=") && !strings.HasPrefix(f, "password=") {
			fields = append(fields, f)
		}
	}
	return strings.Join(append(fields, "user="+user, "password="+password), " ")
}
