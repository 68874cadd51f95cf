package e2e

import (
	"testing"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
)

// TestMain stops the PostgreSQL shared by the tests (the Synapse fixture's
// databases) when they end.
func TestMain(m *testing.M) { pgtest.Main(m) }
