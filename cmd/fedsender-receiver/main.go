// Command fedsender-receiver plays a remote homeserver on this machine, so
// that fedsender can be watched delivering without a second server: it runs
// the strict federation receiver of fedsender's tests (test/receiver), which
// verifies every X-Matrix signature against the origin's key and enforces
// the transaction rules, and prints each accepted transaction, each PDU and
// each protocol violation on stdout.
//
//	fedsender-receiver [--listen 127.0.0.1:8448] [--origin localhost]
//	    [--origin-key data/signing.key] [--ca-out data/receiver-ca.pem]
//	    [--ca-key data/receiver-ca.key]
//
// It serves a certificate of its own certificate authority, whose
// certificate is in --ca-out for fedsender's federation.ca_file: start it
// before fedsender, which reads that file at start. The CA is kept (its key
// in --ca-key) and used again by the next start while it is valid for
// another 12 hours, so that a running fedsender still trusts a restarted
// receiver. It then waits for the origin's signing key file (fedsender's
// development configuration generates data/signing.key on its first start)
// and listens once it has read it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fedsender/fedsender/internal/xmatrix"
	"github.com/fedsender/fedsender/test/pki"
	"github.com/fedsender/fedsender/test/receiver"
)

// keyPoll is how often the origin's key file is looked for; keyParseGrace is
// how long a key file that does not parse is read again, as fedsender may be
// writing it.
// caReuseMargin is how long a kept CA must still be valid to be used again
// (a new one also lasts a day).
const (
	keyPoll       = 100 * time.Millisecond
	keyParseGrace = 5 * time.Second
	caReuseMargin = 12 * time.Hour
)

type options struct {
	listen     string
	serverName string
	origin     string
	originKey  string
	caOut      string
	caKey      string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "fedsender-receiver: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	opts, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	out := &printer{w: stdout}
	ca, err := loadOrCreateCA(opts, out)
	if err != nil {
		return err
	}
	cert, err := ca.Leaf(certNames(opts)...)
	if err != nil {
		return err
	}

	key, err := waitForKey(ctx, opts.originKey, out)
	if err != nil {
		return fmt.Errorf("--origin-key: %w", err)
	}
	r, err := receiver.New(receiver.Options{
		Origin:        opts.origin,
		OriginKey:     key.Public(),
		OriginKeyID:   key.KeyID(),
		Cert:          cert,
		Addr:          opts.listen,
		ServerName:    opts.serverName,
		OnTransaction: out.transaction,
		Logger:        slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	defer r.Close()
	out.printf("listening on https://%s as destination %s, for origin %s signing with %s",
		r.Addr(), r.ServerName(), opts.origin, key.KeyID())
	<-ctx.Done()
	out.printf("stopping: %d transactions, %d PDUs accepted, %d protocol violations",
		len(r.Transactions()), r.PDUCount(), r.ViolationCount())
	return nil
}

func parseFlags(args []string, stdout io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fedsender-receiver", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8448", "address to serve HTTPS on")
	fs.StringVar(&o.serverName, "server-name", "", "the destination name fedsender is given for this receiver (default: the --listen address)")
	fs.StringVar(&o.origin, "origin", "localhost", "the sending server's name: fedsender's server_name")
	fs.StringVar(&o.originKey, "origin-key", "data/signing.key", "the sender's signing key file, Synapse's format (only its public half is used)")
	fs.StringVar(&o.caOut, "ca-out", "data/receiver-ca.pem", "where to write the CA certificate fedsender must trust (federation.ca_file)")
	fs.StringVar(&o.caKey, "ca-key", "data/receiver-ca.key", "where to keep the CA's private key, to use the CA again on the next start")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return o, fmt.Errorf("--listen: want host:port: %w", err)
	}
	return o, nil
}

// certNames are the names the certificate is valid for: the loopback
// addresses, localhost, and the host of --listen and --server-name.
func certNames(o options) []string {
	names := []string{"127.0.0.1", "::1", "localhost"}
	for _, hp := range []string{o.listen, o.serverName} {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			host = hp // a server name without a port
		}
		if host != "" && !slices.Contains(names, host) {
			names = append(names, host)
		}
	}
	return names
}

// waitForKey reads the origin's key file, waiting for it to appear.
func waitForKey(ctx context.Context, path string, out *printer) (xmatrix.SigningKey, error) {
	tick := time.NewTicker(keyPoll)
	defer tick.Stop()
	var waiting bool
	var badSince time.Time
	for {
		key, err := xmatrix.LoadKeyFile(path)
		switch {
		case err == nil:
			return key, nil
		case errors.Is(err, os.ErrNotExist):
			if !waiting {
				out.printf("waiting for %s: start fedsender, which writes it on its first start", path)
				waiting = true
			}
		case badSince.IsZero():
			badSince = time.Now() // perhaps being written: read it again
		case time.Since(badSince) > keyParseGrace:
			return key, err
		}
		select {
		case <-ctx.Done():
			return xmatrix.SigningKey{}, fmt.Errorf("stopped while waiting for %s", path)
		case <-tick.C:
		}
	}
}

// loadOrCreateCA uses the CA of an earlier start while it is valid for
// another caReuseMargin, else makes a new one and writes it.
func loadOrCreateCA(opts options, out *printer) (*pki.CA, error) {
	certPEM, errCert := os.ReadFile(opts.caOut)
	keyPEM, errKey := os.ReadFile(opts.caKey)
	if errCert == nil && errKey == nil {
		ca, err := pki.LoadCA(certPEM, keyPEM)
		if err == nil && time.Until(ca.NotAfter()) > caReuseMargin {
			out.printf("CA certificate %s used again (fedsender's federation.ca_file)", opts.caOut)
			return ca, nil
		}
	}
	ca, err := pki.NewCA()
	if err != nil {
		return nil, err
	}
	keyPEM, err = ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := writeFile(opts.caKey, keyPEM); err != nil {
		return nil, fmt.Errorf("--ca-key: %w", err)
	}
	if err := writeFile(opts.caOut, ca.PEM()); err != nil {
		return nil, fmt.Errorf("--ca-out: %w", err)
	}
	out.printf("CA certificate %s written (fedsender's federation.ca_file; a fedsender already running must be restarted to trust it)", opts.caOut)
	return ca, nil
}

// writeFile writes data to path whole (a temporary file renamed), creating
// the directory, so that fedsender never reads half a certificate.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".fedsender-receiver-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// printer writes whole lines to stdout from the receiver's request
// goroutines and its logger.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}

func (p *printer) printf(format string, args ...any) {
	fmt.Fprintf(p, format+"\n", args...)
}

func (p *printer) transaction(t receiver.Transaction, pdus []receiver.PDU) {
	p.printf("transaction %s accepted: %d PDUs, %d EDUs", t.TxnID, t.PDUs, t.EDUs)
	for _, pdu := range pdus {
		p.printf("pdu %s room %s txn %s", pdu.EventID, pdu.RoomID, pdu.TxnID)
	}
}
