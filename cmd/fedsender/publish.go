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

// maxLine is the longest line publish reads: no NATS server takes a
// message over 64 MiB (the ceiling of its max_payload).
const maxLine = 64 << 20

// envelopeLine is one non-empty input line and its number.
type envelopeLine struct {
	n    int
	data []byte
}

func publish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("publish")
	server := fs.String("server", "", "NATS server URL (default: the configuration's, else $NATS_URL, else nats://127.0.0.1:4222)")
	path := fs.String("config", "", "fedsender's configuration file, to take nats.url (or the embedded server's nats.listen) and the nats.* login from it")
	file := fs.String("file", "", "JSON-lines envelopes to publish (default: stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := commandNATS(*server, *path)
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
	// Validate every line before publishing any, so a bad file publishes
	// nothing. A line with an edu_type is an EDU envelope, any other a PDU
	// envelope. Invalid destinations do not make a line invalid: fedsender
	// refuses them one by one and delivers to the others.
	lines, err := readEnvelopes(in)
	if err != nil {
		return err
	}
	for _, l := range lines {
		refused, err := streams.Validate(l.data)
		if err != nil {
			return fmt.Errorf("line %d: %w", l.n, err)
		}
		for _, r := range refused {
			fmt.Fprintf(stderr, "line %d: %v: fedsender refuses this destination and delivers to the others\n", l.n, r)
		}
	}
	nc, js, err := connectJetStream(cfg, "fedsender publish")
	if err != nil {
		return err
	}
	defer nc.Close()
	pub := streams.NewPublisher(js)
	for _, l := range lines {
		if _, err := pub.Message(ctx, l.data); err != nil {
			return fmt.Errorf("line %d: %w", l.n, err)
		}
	}
	published, dups := 0, 0
	for _, l := range lines {
		_, dup, err := pub.Publish(ctx, l.data)
		if err != nil {
			return fmt.Errorf("line %d: %w (the lines before it were published)", l.n, err)
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

// readEnvelopes reads the non-empty lines of in, trimmed.
func readEnvelopes(in io.Reader) ([]envelopeLine, error) {
	var lines []envelopeLine
	rd := bufio.NewReaderSize(in, 1<<20)
	for n := 1; ; n++ {
		line, err := readLine(rd)
		if errors.Is(err, errLineTooLong) {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			lines = append(lines, envelopeLine{n: n, data: line})
		}
		if errors.Is(err, io.EOF) {
			return lines, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading envelopes: %w", err)
		}
	}
}

var errLineTooLong = fmt.Errorf("longer than %d bytes, more than any NATS server takes in a message", maxLine)

// readLine returns the next line without its newline, or errLineTooLong
// once it passes maxLine.
func readLine(rd *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := rd.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return bytes.TrimSuffix(line, []byte("\n")), err
		}
	}
}
