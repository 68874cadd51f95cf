package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json), with the build
// events of `go test -json` added in Go 1.24.
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string // a package's fail: its build failed
}

// test is one test or subtest of a package.
type test struct {
	name   string
	output strings.Builder
	ended  bool
}

// pkg is a package whose test binary is running.
type pkg struct {
	tests  map[string]*test
	order  []*test
	output strings.Builder // lines that belong to no test
	failed bool            // one of its tests failed
}

// summary reads a `go test -json` stream, printing as it goes, and counts.
type summary struct {
	w        io.Writer
	pkgs     map[string]*pkg
	passed   int
	failures []string
	skips    []string
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, pkgs: map[string]*pkg{}}
}

// read consumes the stream. A line that is not an event (go test writes
// some errors to stdout) is printed as it is.
func (s *summary) read(r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var e event
			if json.Unmarshal(line, &e) != nil || e.Action == "" {
				fmt.Fprintf(s.w, "%s", line)
			} else {
				s.handle(e)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading go test's output: %w", err)
		}
	}
}

func (s *summary) handle(e event) {
	if e.Action == "build-output" {
		fmt.Fprint(s.w, e.Output)
		return
	}
	if e.Package == "" {
		return
	}
	p := s.pkgs[e.Package]
	if p == nil {
		p = &pkg{tests: map[string]*test{}}
		s.pkgs[e.Package] = p
	}
	if e.Test == "" {
		s.packageEvent(e, p)
		return
	}
	t := p.tests[e.Test]
	if t == nil {
		t = &test{name: e.Test}
		p.tests[e.Test] = t
		p.order = append(p.order, t)
	}
	switch e.Action {
	case "output":
		t.output.WriteString(e.Output)
	case "pass":
		t.ended = true
		s.passed++
	case "skip":
		t.ended = true
		s.skips = append(s.skips, fmt.Sprintf("SKIP %s %s: %s", e.Package, t.name, skipReason(t.output.String())))
	case "fail":
		t.ended = true
		s.testFailed(e.Package, p, t)
	}
}

func (s *summary) packageEvent(e event, p *pkg) {
	switch e.Action {
	case "output":
		p.output.WriteString(e.Output)
	case "pass", "skip":
		// As go test without -v: only the result line ("ok ...", "? ... [no test files]").
		out := strings.TrimSuffix(p.output.String(), "\n")
		fmt.Fprintln(s.w, out[strings.LastIndex(out, "\n")+1:])
		delete(s.pkgs, e.Package)
	case "fail":
		// Tests still running when the binary ended (a timeout, a crash)
		// failed with it.
		for _, t := range p.order {
			if !t.ended {
				s.testFailed(e.Package, p, t)
			}
		}
		switch {
		case e.FailedBuild != "":
			s.failures = append(s.failures, fmt.Sprintf("FAIL %s [build failed]", e.Package))
		case !p.failed:
			s.failures = append(s.failures, fmt.Sprintf("FAIL %s (the test binary failed outside any test: see its output above)", e.Package))
		}
		fmt.Fprint(s.w, p.output.String())
		delete(s.pkgs, e.Package)
	}
}

// testFailed prints a failed test's whole output and records it.
func (s *summary) testFailed(pkgName string, p *pkg, t *test) {
	p.failed = true
	fmt.Fprint(s.w, t.output.String())
	s.failures = append(s.failures, fmt.Sprintf("FAIL %s %s", pkgName, t.name))
}

// skipReason is what a skipped test logged, without the framing lines.
func skipReason(output string) string {
	var reason []string
	for line := range strings.SplitSeq(output, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "=== ") || strings.HasPrefix(line, "--- SKIP") {
			continue
		}
		reason = append(reason, line)
	}
	if len(reason) == 0 {
		return "no reason given"
	}
	return strings.Join(reason, " ")
}

// finish prints the summary after go test ended (with goErr), and returns
// the exit status: 1 if anything failed.
func (s *summary) finish(goErr error) int {
	for name := range s.pkgs {
		s.failures = append(s.failures, fmt.Sprintf("FAIL %s: go test ended before this package's result", name))
	}
	if goErr != nil && len(s.failures) == 0 {
		s.failures = append(s.failures, fmt.Sprintf("FAIL go test: %v (see its errors above)", goErr))
	}
	if len(s.failures) > 0 {
		fmt.Fprintln(s.w)
	}
	for _, f := range s.failures {
		fmt.Fprintln(s.w, f)
	}
	fmt.Fprintf(s.w, "%d passed, %d failed, %d skipped\n", s.passed, len(s.failures), len(s.skips))
	for _, skip := range s.skips {
		fmt.Fprintln(s.w, skip)
	}
	if len(s.failures) > 0 {
		return 1
	}
	return 0
}
