// Command setup is the first step of `go tool task test`: it checks what
// the tests need from the machine, installs what is missing when it runs as
// root on Debian, and otherwise stops with the command to run. See package
// prereq.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/fedsender/fedsender/test/prereq"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "test set-up: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return prereq.Setup(ctx, prereq.Local(), os.Stdout)
}
