package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fedsender/fedsender/streams"
)

func publish(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags("publish")
	path := fs.String("config", "", "YAML configuration file (required): nats.url, or nats.listen of the embedded server, and the nats.* login")
	file := fs.String("file", "", "JSON-lines envelopes to publish (default: stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("--config is required")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	in := stdin
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		defer f.Close()
		in = f
	}
	// Validate every line before publishing any, so a bad file publishes nothing.
	var lines [][]byte
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 8<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if _, err := streams.DecodePDU(line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		lines = append(lines, bytes.Clone(line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading envelopes: %w", err)
	}
	nc, js, err := connectJetStream(cfg, "fedsender publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	pub := streams.NewPublisher(js)
	published, dups := 0, 0
	for i, line := range lines {
		_, dup, err := pub.Publish(ctx, line)
		if err != nil {
			return fmt.Errorf("envelope %d: %w", i+1, err)
		}
		if dup {
			dups++
		} else {
			published++
		}
	}
	fmt.Fprintf(stdout, "published %d envelopes (%d duplicates ignored)\n", published, dups)
	return nil
}
