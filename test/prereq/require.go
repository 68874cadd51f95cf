package prereq

import (
	"fmt"
	"strings"
	"testing"
)

// Require returns where p is on this machine, for the test t. When p is
// missing it fails t, saying how to install it; when FEDSENDER_TEST_SKIP
// names p it skips t, whether p is there or not.
func Require(t testing.TB, p Prerequisite) string {
	t.Helper()
	return Local().Require(t, p)
}

// Require is [Require] in e.
func (e Env) Require(t testing.TB, p Prerequisite) string {
	t.Helper()
	e.OptOut(t, p)
	where, err := e.Find(p)
	if err != nil {
		e.Fail(t, p, err)
	}
	return where
}

// OptOut skips t when FEDSENDER_TEST_SKIP names p, and fails it when the
// variable names something that is not a prerequisite.
func (e Env) OptOut(t testing.TB, p Prerequisite) {
	t.Helper()
	skip, err := e.Skipped()
	if err != nil {
		t.Fatal(err)
	}
	if skip[p.Name] {
		t.Skipf("needs %s; skipped because %s=%s", p.What, EnvSkip, e.Skip)
	}
}

// Fail fails t because p is missing (err, from [Env.Find], says how it was
// looked for), with the command that installs it.
func (e Env) Fail(t testing.TB, p Prerequisite, err error) {
	t.Helper()
	t.Fatalf("%v\n%s", err, e.Advice([]Prerequisite{p}))
}

// Advice says how to get ps on this machine: the exact command to run, and
// how to skip their tests instead.
func (e Env) Advice(ps []Prerequisite) string {
	var b strings.Builder
	var debian []string
	for _, p := range ps {
		if p.Name == Python.Name && e.Python != e.DebianPython {
			fmt.Fprintf(&b, "install the libraries for %s=%s: %s -m pip install signedjson canonicaljson unpaddedbase64\n",
				EnvPython, e.Python, e.Python)
			continue
		}
		debian = append(debian, p.Debian...)
	}
	if len(debian) > 0 {
		packages := strings.Join(debian, " ")
		switch {
		case e.look("apt-get") == "":
			fmt.Fprintf(&b, "install what the Debian packages %s provide (this machine has no apt-get)\n", packages)
		case e.Root:
			fmt.Fprintf(&b, "install them: apt-get update && apt-get install -y %s\n", packages)
		case e.look("sudo") != "":
			fmt.Fprintf(&b, "install them: sudo apt-get update && sudo apt-get install -y %s\n", packages)
		default:
			fmt.Fprintf(&b, "install them as root: apt-get update && apt-get install -y %s\n", packages)
		}
	}
	fmt.Fprintf(&b, "or skip the tests that need them: %s=%s", EnvSkip, strings.Join(names(ps), ","))
	return b.String()
}
