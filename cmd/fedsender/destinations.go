package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/redact"
	"github.com/fedsender/fedsender/streams"
)

const destinationsUsage = `fedsender destinations: Synapse's federation admin API, through the NATS micro service

Usage:
  fedsender destinations list  [--from N] [--limit N] [--destination SEARCH] [--order_by COLUMN] [--dir f|b]
  fedsender destinations show  NAME
  fedsender destinations rooms NAME [--from N] [--limit N] [--dir f|b]
  fedsender destinations reset NAME

The parameters are the HTTP API's, checked by the service with its errors.
COLUMN is destination, retry_last_ts, retry_interval, failure_ts or
last_successful_stream_ordering. Connection and output:

  --config FILE   take the NATS server, login and TLS from fedsender's configuration (nats.*)
  --server URL    NATS server (default: from --config, else $NATS_URL, else nats://127.0.0.1:4222);
                  with --config, the configuration's login and TLS are used on it
  --timeout D     how long to wait for an answer (default 5s)
  --json          print the service's JSON answer instead of a table
`

// destinationsCall is one parsed command line.
type destinationsCall struct {
	op      string
	request map[string]string
	server  string
	config  string
	timeout time.Duration
	json    bool
}

func destinations(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, destinationsUsage)
		if len(args) == 0 {
			return errors.New("missing command: list, show, rooms or reset")
		}
		return nil
	}
	call, err := parseDestinations(args)
	if err != nil {
		return err
	}
	url, natsCfg, err := call.natsServer()
	if err != nil {
		return err
	}
	nc, err := connectNATS(natsCfg, url, "fedsender destinations", call.timeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	body, err := json.Marshal(call.request)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, call.timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, streams.AdminSubject(call.op), body)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no fedsender answers on %s at %s (is fedsender running with this NATS server?)", streams.AdminSubject(call.op), redact.URL(url))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", streams.AdminSubject(call.op), err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return serviceError(code, msg)
	}
	if call.json {
		_, err := fmt.Fprintf(stdout, "%s\n", msg.Data)
		return err
	}
	return printTable(stdout, call, msg.Data)
}

// serviceError is the error a micro error answer reports.
func serviceError(code string, msg *nats.Msg) error {
	var body struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(msg.Data, &body) == nil && body.Errcode != "" {
		return fmt.Errorf("%s %s: %s", code, body.Errcode, body.Error)
	}
	return fmt.Errorf("%s: %s", code, msg.Header.Get(micro.ErrorHeader))
}

// parseDestinations reads the operation, its NAME and flags (before or
// after NAME).
func parseDestinations(args []string) (destinationsCall, error) {
	call := destinationsCall{op: args[0], request: map[string]string{}}
	var takes []string
	switch call.op {
	case "list":
		takes = []string{"from", "limit", "destination", "order_by", "dir"}
	case "rooms":
		takes = []string{"from", "limit", "dir"}
	case "show", "reset":
	default:
		return call, fmt.Errorf("unknown command %q: want list, show, rooms or reset", call.op)
	}
	fs := newFlags("destinations " + call.op)
	fs.SetOutput(io.Discard)
	fs.StringVar(&call.server, "server", "", "NATS server URL")
	fs.StringVar(&call.config, "config", "", "fedsender configuration file")
	fs.DurationVar(&call.timeout, "timeout", 5*time.Second, "answer timeout")
	fs.BoolVar(&call.json, "json", false, "print JSON")
	params := map[string]*string{}
	for _, k := range takes {
		params[k] = fs.String(k, "", "the HTTP API's "+k)
	}
	if call.op == "list" {
		fs.StringVar(params["order_by"], "order-by", "", "alias of --order_by")
	}
	var names []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			return call, fmt.Errorf("%w\n\n%s", err, destinationsUsage)
		}
		if fs.NArg() == 0 {
			break
		}
		names, rest = append(names, fs.Arg(0)), fs.Args()[1:]
	}
	fs.Visit(func(f *flag.Flag) {
		name := f.Name
		if name == "order-by" {
			name = "order_by"
		}
		if p, ok := params[name]; ok {
			call.request[name] = *p
		}
	})
	switch {
	case call.op == "list" && len(names) > 0:
		return call, fmt.Errorf("list takes no NAME (got %q); search with --destination", names)
	case call.op != "list" && len(names) != 1:
		return call, fmt.Errorf("%s takes one destination NAME", call.op)
	case call.op != "list":
		call.request["destination"] = names[0]
	}
	return call, nil
}

// natsServer returns the NATS server to ask and how to log in to it.
func (c destinationsCall) natsServer() (string, config.NATSConfig, error) {
	cfg, err := commandNATS(c.server, c.config)
	if err != nil {
		return "", cfg.NATS, err
	}
	url, err := natsURL(cfg)
	if err != nil {
		return "", cfg.NATS, fmt.Errorf("%w: use --server", err)
	}
	return url, cfg.NATS, nil
}

// destinationRow is Synapse's destination object.
type destinationRow struct {
	Destination                  string  `json:"destination"`
	RetryLastTS                  int64   `json:"retry_last_ts"`
	RetryInterval                int64   `json:"retry_interval"`
	FailureTS                    *int64  `json:"failure_ts"`
	LastSuccessfulStreamOrdering *uint64 `json:"last_successful_stream_ordering"`
}

func printTable(w io.Writer, call destinationsCall, data []byte) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var total int
	var next string
	switch call.op {
	case "list":
		var out struct {
			Destinations []destinationRow `json:"destinations"`
			Total        int              `json:"total"`
			NextToken    string           `json:"next_token"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return fmt.Errorf("unexpected answer %q: %w", data, err)
		}
		fmt.Fprintln(tw, "DESTINATION\tRETRY_LAST_TS\tRETRY_INTERVAL\tFAILURE_TS\tLAST_SUCCESSFUL_STREAM_ORDERING")
		for _, d := range out.Destinations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Destination, msTime(d.RetryLastTS), msDuration(d.RetryInterval),
				msTimePtr(d.FailureTS), seqPtr(d.LastSuccessfulStreamOrdering))
		}
		total, next = out.Total, out.NextToken
	case "show":
		var d destinationRow
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("unexpected answer %q: %w", data, err)
		}
		fmt.Fprintf(tw, "destination\t%s\n", d.Destination)
		fmt.Fprintf(tw, "retry_last_ts\t%s\n", msTime(d.RetryLastTS))
		fmt.Fprintf(tw, "retry_interval\t%s\n", msDuration(d.RetryInterval))
		fmt.Fprintf(tw, "failure_ts\t%s\n", msTimePtr(d.FailureTS))
		fmt.Fprintf(tw, "last_successful_stream_ordering\t%s\n", seqPtr(d.LastSuccessfulStreamOrdering))
		return tw.Flush()
	case "rooms":
		var out struct {
			Rooms []struct {
				RoomID         string `json:"room_id"`
				StreamOrdering uint64 `json:"stream_ordering"`
			} `json:"rooms"`
			Total     int    `json:"total"`
			NextToken string `json:"next_token"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return fmt.Errorf("unexpected answer %q: %w", data, err)
		}
		fmt.Fprintln(tw, "ROOM_ID\tSTREAM_ORDERING")
		for _, r := range out.Rooms {
			fmt.Fprintf(tw, "%s\t%d\n", r.RoomID, r.StreamOrdering)
		}
		total, next = out.Total, out.NextToken
	case "reset":
		fmt.Fprintf(tw, "reset of %s done: retry timings cleared, destination woken\n", call.request["destination"])
		return tw.Flush()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		_, err := fmt.Fprintf(w, "total %d; next page: --from %s\n", total, next)
		return err
	}
	_, err := fmt.Fprintf(w, "total %d\n", total)
	return err
}

func msTime(ms int64) string {
	if ms == 0 {
		return "0"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

func msTimePtr(ms *int64) string {
	if ms == nil {
		return "null"
	}
	return msTime(*ms)
}

func msDuration(ms int64) string {
	if ms == 0 {
		return "0"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func seqPtr(s *uint64) string {
	if s == nil {
		return "null"
	}
	return strconv.FormatUint(*s, 10)
}
