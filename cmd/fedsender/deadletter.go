package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/deadletter"
)

const deadletterUsage = `fedsender deadletter: the envelopes and destinations fedsender refused

Usage:
  fedsender deadletter list   [--json]
  fedsender deadletter replay --seq N | --all

list prints every record of the FEDSENDER_DEADLETTER stream, oldest first
(--json: one JSON object a line, with the record's envelope: as published,
or for a refused destination with only that destination). replay
republishes a record's envelope to fedsender.pdu and deletes the record
once JetStream has it; an envelope that would be refused again is kept.
Connection:

  --server URL    NATS server (default $NATS_URL, else nats://127.0.0.1:4222)
  --config FILE   take the NATS server from fedsender's configuration instead
`

// deadletterJSON is one line of list --json.
type deadletterJSON struct {
	Seq              uint64    `json:"seq"`
	Time             time.Time `json:"time"`
	ID               string    `json:"id"`
	Reason           string    `json:"reason"`
	SourceSeq        uint64    `json:"source_seq"`
	Destination      *string   `json:"destination,omitempty"`
	DestinationIndex *int      `json:"destination_index,omitempty"`
	Envelope         string    `json:"envelope"`
}

func deadletterCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, deadletterUsage)
		if len(args) == 0 {
			return errors.New("missing command: list or replay")
		}
		return nil
	}
	op := args[0]
	if op != "list" && op != "replay" {
		return fmt.Errorf("unknown command %q: want list or replay", op)
	}
	fs := newFlags("deadletter " + op)
	server := fs.String("server", "", "NATS server URL")
	path := fs.String("config", "", "fedsender configuration file")
	asJSON := fs.Bool("json", false, "list: one JSON object a line")
	seq := fs.Uint64("seq", 0, "replay: the record's sequence")
	all := fs.Bool("all", false, "replay: every record")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if op == "replay" && (*seq == 0) == !*all {
		return errors.New("replay takes --seq N or --all")
	}
	cfg, err := commandNATS(*server, *path)
	if err != nil {
		return err
	}
	nc, js, err := connectJetStream(cfg, "fedsender deadletter")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if op == "list" {
		return listDeadLetters(ctx, js, stdout, *asJSON)
	}
	return replayDeadLetters(ctx, js, stdout, stderr, *seq)
}

func listDeadLetters(ctx context.Context, js jetstream.JetStream, w io.Writer, asJSON bool) error {
	records, err := deadletter.List(ctx, js)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range records {
			line := deadletterJSON{Seq: r.Seq, Time: r.Time.UTC(), ID: r.ID, Reason: r.Reason, SourceSeq: r.SourceSeq,
				Envelope: string(r.Envelope)}
			if r.DestinationIndex >= 0 {
				line.Destination, line.DestinationIndex = &r.Destination, &r.DestinationIndex
			}
			if err := enc.Encode(line); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tSOURCE_SEQ\tDESTINATION\tREASON")
	for _, r := range records {
		dest := "(envelope)"
		if r.DestinationIndex >= 0 {
			dest = fmt.Sprintf("%q", r.Destination)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", r.Seq, r.Time.UTC().Format(time.RFC3339), r.SourceSeq, dest, oneLine(r.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "total %d\n", len(records))
	return err
}

// replayDeadLetters replays record seq, or every record when seq is 0. It
// goes on past records that would be refused again, and fails at the end
// if there were any.
func replayDeadLetters(ctx context.Context, js jetstream.JetStream, stdout, stderr io.Writer, seq uint64) error {
	var records []deadletter.Record
	if seq != 0 {
		r, err := deadletter.Get(ctx, js, seq)
		if err != nil {
			return err
		}
		records = []deadletter.Record{r}
	} else {
		var err error
		if records, err = deadletter.List(ctx, js); err != nil {
			return err
		}
	}
	kept := 0
	for _, r := range records {
		done, err := deadletter.Replay(ctx, js, r)
		if errors.Is(err, deadletter.ErrStillInvalid) {
			kept++
			fmt.Fprintf(stderr, "record %d kept: %v\n", r.Seq, err)
			continue
		}
		if err != nil {
			return err
		}
		note := ""
		if done.Duplicate {
			note = " (already replayed)"
		}
		fmt.Fprintf(stdout, "record %d replayed as PDU %d%s\n", r.Seq, done.PDUSeq, note)
	}
	if kept > 0 {
		return fmt.Errorf("%d of %d records would be refused again and were kept: fix the envelope and publish it with fedsender publish", kept, len(records))
	}
	return nil
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", " ").Replace(s)
}
