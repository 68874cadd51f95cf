package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The streams in testdata were recorded with `go test -json` from the
// module in testdata/mod, whose packages pass, fail, skip, fail to build,
// panic, time out (-timeout 3s) and fail in TestMain:
//
//	mixed.jsonl: go test -json -count=1 -timeout 3s ./...
//	pass.jsonl:  go test -json -count=1 ./pass ./notests
//	skip.jsonl:  go test -json -count=1 ./pass ./skip

var exitStatus1 = errors.New("exit status 1")

// summarise feeds a recorded stream (cut to its first n bytes if n > 0) and
// returns the printed lines and the exit status.
func summarise(t *testing.T, file string, n int, goErr error) ([]string, int) {
	t.Helper()
	stream, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		stream = stream[:n]
	}
	var out bytes.Buffer
	s := newSummary(&out)
	if err := s.read(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	code := s.finish(goErr)
	return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"), code
}

// tail is the last n lines.
func tail(lines []string, n int) []string { return lines[max(0, len(lines)-n):] }

func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		name     string
		file     string
		cut      int
		goErr    error
		wantCode int
		// wantTail: the last lines, exactly.
		wantTail []string
		// wantShown: printed somewhere; wantHidden: nowhere.
		wantShown, wantHidden []string
	}{{
		name: "every kind of failure", file: "mixed.jsonl", goErr: exitStatus1, wantCode: 1,
		wantTail: []string{
			"FAIL example.com/gtj/buildfail [build failed]",
			"FAIL example.com/gtj/fail TestBad",
			"FAIL example.com/gtj/fail TestParent/broken",
			"FAIL example.com/gtj/fail TestParent",
			"FAIL example.com/gtj/mainfail (the test binary failed outside any test: see its output above)",
			"FAIL example.com/gtj/panics TestPanics",
			"FAIL example.com/gtj/timeout TestHangs",
			"9 passed, 7 failed, 2 skipped",
			"SKIP example.com/gtj/skip TestNeedsPython: skip_test.go:8: /usr/bin/python3 cannot import signedjson; skipped because FEDSENDER_TEST_SKIP=python",
			"SKIP example.com/gtj/skip TestNoReason: no reason given",
		},
		wantShown: []string{
			`buildfail/buildfail_test.go:5:44: cannot use "not an int" (untyped string constant) as int value in variable declaration`,
			"    fail_test.go:8: what the user sees first",
			"    fail_test.go:9: got 3 offsets, want 5",
			"--- FAIL: TestBad (0.00s)",
			"    fail_test.go:14: subtest broke",
			"could not start the shared server",
			"panic: assignment to entry in nil map [recovered, repanicked]",
			"panic: test timed out after 3s",
			"?   \texample.com/gtj/notests\t[no test files]",
		},
		wantHidden: []string{"=== RUN   TestGood", "    pass_test.go:9: fine"},
	}, {
		name: "all pass", file: "pass.jsonl", wantCode: 0,
		wantTail:   []string{"ok  \texample.com/gtj/pass\t0.009s", "4 passed, 0 failed, 0 skipped"},
		wantShown:  []string{"?   \texample.com/gtj/notests\t[no test files]"},
		wantHidden: []string{"=== RUN   TestOne", "    pass_test.go:9: fine", "PASS"},
	}, {
		name: "skips listed with their reasons", file: "skip.jsonl", wantCode: 0,
		wantTail: []string{
			"5 passed, 0 failed, 2 skipped",
			"SKIP example.com/gtj/skip TestNeedsPython: skip_test.go:8: /usr/bin/python3 cannot import signedjson; skipped because FEDSENDER_TEST_SKIP=python",
			"SKIP example.com/gtj/skip TestNoReason: no reason given",
		},
		wantHidden: []string{"--- SKIP: TestNeedsPython (0.00s)"},
	}, {
		// go test killed in the middle of the fail package.
		name: "stream cut short", file: "mixed.jsonl", cut: 3000, goErr: errors.New("signal: killed"), wantCode: 1,
		wantTail: []string{
			"FAIL example.com/gtj/buildfail [build failed]",
			"FAIL example.com/gtj/fail TestBad",
			"FAIL example.com/gtj/fail: go test ended before this package's result",
			"1 passed, 3 failed, 0 skipped",
		},
	}, {
		// go test stopped before any package (a bad flag, no packages).
		name: "go test failed alone", file: "pass.jsonl", cut: 1, goErr: exitStatus1, wantCode: 1,
		wantTail: []string{"FAIL go test: exit status 1 (see its errors above)", "0 passed, 1 failed, 0 skipped"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			lines, code := summarise(t, tc.file, tc.cut, tc.goErr)
			if code != tc.wantCode {
				t.Errorf("exit status %d, want %d", code, tc.wantCode)
			}
			if got := tail(lines, len(tc.wantTail)); !slices.Equal(got, tc.wantTail) {
				t.Errorf("last lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantTail, "\n"))
			}
			for _, want := range tc.wantShown {
				if !slices.Contains(lines, want) {
					t.Errorf("not shown: %q", want)
				}
			}
			for _, hidden := range tc.wantHidden {
				if slices.Contains(lines, hidden) {
					t.Errorf("shown, as go test without -v would not: %q", hidden)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

// TestExitStatus runs the program on the packages in testdata/mod (all but
// the one that times out, to keep it quick): its exit status and last lines
// are what CI reads.
func TestExitStatus(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "summary")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		packages []string
		wantCode int
		wantLine string
	}{
		{[]string{"./pass", "./fail", "./skip", "./buildfail", "./panics", "./notests", "./mainfail"}, 1, "8 passed, 6 failed, 2 skipped"},
		{[]string{"./pass", "./skip", "./notests"}, 0, "5 passed, 0 failed, 2 skipped"},
		{[]string{"./nonexistent"}, 1, "0 passed, 1 failed, 0 skipped"},
	} {
		cmd := exec.CommandContext(t.Context(), bin, append([]string{"-count=1", "-timeout=5m"}, tc.packages...)...)
		cmd.Dir = filepath.Join("testdata", "mod")
		out, err := cmd.CombinedOutput()
		code := 0
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(out), "\n")
		if code != tc.wantCode || !slices.Contains(lines, tc.wantLine) {
			t.Errorf("%v: exit status %d, want %d and the line %q:\n%s", tc.packages, code, tc.wantCode, tc.wantLine, out)
		}
	}
}
