package synapse_test

import (
	"testing"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
)

// TestMain stops the throwaway PostgreSQL the tests share once they end.
func TestMain(m *testing.M) { pgtest.Main(m) }
