package service_test

import (
	"testing"

	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
