// Command summary runs `go test -json` with its arguments and prints what
// go test prints without -v — each package's result line, and the whole
// output of every test that failed — and then a summary: each failure,
// one line alone "N passed, N failed, N skipped", and each skipped test with
// its reason. It exits 1 if any test failed, any package failed to build or
// its test binary failed outside a test (a panic, a timeout, TestMain), or
// go test itself failed.
//
//	go run ./test/summary -count=1 ./...
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-json"}, os.Args[1:]...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go test: %v\n", err)
		return 1
	}
	s := newSummary(os.Stdout)
	readErr := s.read(stdout)
	waitErr := cmd.Wait()
	if readErr != nil {
		waitErr = readErr
	}
	return s.finish(waitErr)
}
