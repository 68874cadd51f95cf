package buildfail

import "testing"

func TestNever(t *testing.T) { var x int = "not an int"; _ = x }
