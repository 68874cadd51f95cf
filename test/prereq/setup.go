package prereq

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Setup checks every prerequisite that FEDSENDER_TEST_SKIP does not name,
// reporting each on out. It installs the missing ones with apt-get when it
// runs as root on a machine that has apt-get; otherwise, or if they are
// still missing after that, it returns an error naming each one and the
// command that installs them.
func Setup(ctx context.Context, e Env, out io.Writer) error {
	skip, err := e.Skipped()
	if err != nil {
		return err
	}
	missing, errs := e.check(skip, out)
	if len(missing) == 0 {
		return nil
	}
	if apt := e.look("apt-get"); e.Root && apt != "" {
		var packages []string
		for _, p := range missing {
			if p.Name != Python.Name || e.Python == e.DebianPython {
				packages = append(packages, p.Debian...)
			}
		}
		if len(packages) > 0 {
			fmt.Fprintf(out, "installing %s with apt-get\n", strings.Join(packages, " "))
			if err := install(ctx, apt, packages, out); err != nil {
				return fmt.Errorf("%w\n%s", err, e.Advice(missing))
			}
			missing, errs = e.check(skip, out)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("the tests need what this machine lacks:\n")
	for _, err := range errs {
		fmt.Fprintf(&b, "  %v\n", err)
	}
	b.WriteString(e.Advice(missing))
	return fmt.Errorf("%s", b.String())
}

// check looks for each prerequisite not in skip, and returns the missing
// ones with why.
func (e Env) check(skip map[string]bool, out io.Writer) ([]Prerequisite, []error) {
	var missing []Prerequisite
	var errs []error
	for _, p := range All() {
		if skip[p.Name] {
			fmt.Fprintf(out, "%-8s skipped: %s=%s\n", p.Name, EnvSkip, e.Skip)
			continue
		}
		where, err := e.Find(p)
		if err != nil {
			fmt.Fprintf(out, "%-8s missing\n", p.Name)
			missing, errs = append(missing, p), append(errs, err)
			continue
		}
		fmt.Fprintf(out, "%-8s %s\n", p.Name, where)
	}
	return missing, errs
}

// install runs apt-get update, then apt-get install.
func install(ctx context.Context, apt string, packages []string, out io.Writer) error {
	for _, args := range [][]string{
		{"update", "-qq"},
		append([]string{"install", "-y", "-qq"}, packages...),
	} {
		cmd := exec.CommandContext(ctx, apt, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}
