// Command fedsender delivers a Matrix homeserver's PDUs to the other servers
// of its rooms. It only parses flags and wires packages together; the work
// lives in internal/ and actors/.
//
//	fedsender keygen --server-name NAME --out FILE
//	fedsender run --config FILE
//	fedsender publish [--server URL | --config FILE] [--file F]
//	fedsender destinations list|show|rooms|reset [...]
//	fedsender deadletter list|replay [...]
//	fedsender migrate --config FILE
//	fedsender projection rebuild --config FILE
//	fedsender version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedsender/fedsender/internal/redact"
	"github.com/fedsender/fedsender/internal/telemetry"
)

const usage = `fedsender: an outbound Matrix federation sender on NATS JetStream

Usage:
  fedsender keygen --server-name NAME --out FILE   write a Synapse-format signing key
  fedsender run --config FILE                      run the service
  fedsender publish [--server URL] [--file F]      publish JSON-lines PDU envelopes (stdin by default)
  fedsender destinations list|show|rooms|reset     the federation admin API over NATS (see: fedsender destinations help)
  fedsender deadletter list|replay                 refused envelopes and destinations (see: fedsender deadletter help)
  fedsender migrate --config FILE                  create or upgrade the PostgreSQL read model's schema
  fedsender projection rebuild --config FILE       empty the PostgreSQL read model and project the event log again
  fedsender version (or --version)                 the version, commit and Go version of this build

Every configuration key can be overridden by FEDSENDER_<PATH>, e.g. FEDSENDER_ADMIN_TOKEN.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "keygen":
		err = keygen(args[1:], stdout)
	case "run":
		err = runService(ctx, args[1:], stderr)
	case "publish":
		err = publish(ctx, args[1:], stdin, stdout, stderr)
	case "destinations":
		err = destinations(ctx, args[1:], stdout)
	case "deadletter":
		err = deadletterCmd(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = migrate(ctx, args[1:], stdout)
	case "projection":
		err = projectionCmd(ctx, args[1:], stdout)
	case "version", "--version":
		b := telemetry.ReadBuild()
		fmt.Fprintf(stdout, "version: %s\ncommit: %s\ngo: %s\n", b.Version, b.Commit, b.GoVersion)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fedsender: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(loggedError)) {
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "fedsender %s: %s\n", args[0], redact.Text(err.Error()))
		return 1
	}
	return 0
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("fedsender "+name, flag.ContinueOnError)
	return fs
}

func newLogger(level, format string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config
	// Every string and error is masked as a last line of defence: a
	// password or token inside a URL or DSN never reaches the log.
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: redactAttr}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// Records logged inside a span carry its trace_id and span_id.
	return slog.New(telemetry.NewLogHandler(h))
}

// redactAttr masks the secrets in a log attribute's text (redact.Text). A
// value of another kind that prints a secret is logged as its masked text.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(redact.Text(a.Value.String()))
	case slog.KindAny:
		if s := fmt.Sprint(a.Value.Any()); redact.Text(s) != s {
			a.Value = slog.StringValue(redact.Text(s))
		}
	}
	return a
}
