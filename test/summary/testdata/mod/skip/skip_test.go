package skip

import "testing"

func TestRuns(t *testing.T) {}

func TestNeedsPython(t *testing.T) {
	t.Skip("/usr/bin/python3 cannot import signedjson; skipped because FEDSENDER_TEST_SKIP=python")
}

func TestNoReason(t *testing.T) { t.SkipNow() }
