package grants_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/internal/synapse/grants"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestGrants: the role made from the grants logs in to Synapse's database, can
// do what each grant lists on its table, and nothing else (checked for
// every privilege on every table of the list through has_table_privilege).
func TestGrants(t *testing.T) {
	url := synapsefixture.Role(t, synapsefixture.Database(t, synapsefixture.Main))
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("the feed's role cannot log in: %v", err)
	}
	defer conn.Close(t.Context())
	for _, g := range grants.Tables {
		for _, priv := range []string{grants.Select, grants.Insert, grants.Update, grants.Delete, "TRUNCATE", "REFERENCES", "TRIGGER"} {
			var has bool
			if err := conn.QueryRow(t.Context(), "SELECT has_table_privilege($1, $2)", "public."+g.Table, priv).Scan(&has); err != nil {
				t.Fatalf("%s: %v", g.Table, err)
			}
			if want := slices.Contains(g.Privileges, priv); has != want {
				t.Errorf("%s on %s: role has it %v, want %v", priv, g.Table, has, want)
			}
		}
	}
	for _, g := range grants.Sequences {
		for _, priv := range []string{"USAGE", "SELECT", "UPDATE"} {
			var has bool
			if err := conn.QueryRow(t.Context(), "SELECT has_sequence_privilege($1, $2)", "public."+g.Table, priv).Scan(&has); err != nil {
				t.Fatalf("%s: %v", g.Table, err)
			}
			if want := slices.Contains(g.Privileges, priv); has != want {
				t.Errorf("%s on sequence %s: role has it %v, want %v", priv, g.Table, has, want)
			}
		}
	}
	// A table outside the list is closed to it.
	_, err = conn.Exec(t.Context(), "SELECT count(*) FROM users")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("reading users: got %v, want permission denied (42501)", err)
	}
}
