package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/xmatrix"
)

// session is one run of the command with its stdout read line by line.
type session struct {
	t     *testing.T
	lines chan string
	done  chan error
	stop  context.CancelFunc
}

func start(t *testing.T, args ...string) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	s := &session{t: t, lines: make(chan string, 100), done: make(chan error, 1), stop: cancel}
	go func() {
		err := run(ctx, args, pw)
		pw.Close()
		s.done <- err
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cancel()
		for range s.lines { // drain, so that run's writes never block
		}
	})
	return s
}

// expect reads lines until one contains want and returns it.
func (s *session) expect(want string) string {
	s.t.Helper()
	deadline := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("the output ended without %q; it was:\n%s\nrun: %v", want, strings.Join(seen, "\n"), <-s.done)
			}
			if strings.Contains(line, want) {
				return line
			}
			seen = append(seen, line)
		case <-deadline:
			s.t.Fatalf("no line with %q within 30 s; the output was:\n%s", want, strings.Join(seen, "\n"))
		}
	}
}

// The quick start's order: the receiver first (fedsender needs its CA), then
// fedsender, which writes the key the receiver waits for; a PDU sent then is
// printed, and a restarted receiver keeps its CA so a running fedsender still
// trusts it.
func TestWaitsForTheKeyAndPrintsPDUs(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "data", "signing.key")
	caPath := filepath.Join(dir, "data", "receiver-ca.pem")
	args := []string{"--listen", "127.0.0.1:0", "--origin", "localhost", "--origin-key", keyPath,
		"--ca-out", caPath, "--ca-key", filepath.Join(dir, "data", "receiver-ca.key")}

	s := start(t, args...)
	s.expect("CA certificate " + caPath + " written")
	s.expect("waiting for " + keyPath)
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := xmatrix.GenerateKey("a_test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, key.MarshalKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	line := s.expect("listening on https://")
	addr := strings.Fields(strings.TrimPrefix(line, "listening on https://"))[0]

	status := sendTransaction(t, caPEM, key, addr)
	if status != http.StatusOK {
		t.Fatalf("the transaction was answered %d, want 200", status)
	}
	s.expect("transaction t1 accepted: 1 PDUs, 0 EDUs")
	s.expect("pdu $a room !r:localhost txn t1")

	s.stop()
	s.expect("stopping: 1 transactions, 1 PDUs accepted, 0 protocol violations")
	if err := <-s.done; err != nil {
		t.Fatalf("run: %v", err)
	}

	again := start(t, args...)
	again.expect("CA certificate " + caPath + " used again")
	again.expect("listening on https://")
	if now, err := os.ReadFile(caPath); err != nil || !bytes.Equal(now, caPEM) {
		t.Fatalf("the CA certificate changed on a restart (err %v)", err)
	}
}

// sendTransaction sends one signed transaction as fedsender would, trusting
// only the receiver's CA.
func sendTransaction(t *testing.T, caPEM []byte, key xmatrix.SigningKey, addr string) int {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the CA file")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	body := []byte(`{"origin":"localhost","origin_server_ts":1700000000000,"pdus":[{"content":{},"event_id":"$a","room_id":"!r:localhost","type":"m.room.message"}]}`)
	path := "/_matrix/federation/v1/send/t1"
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", xmatrix.SignRequest(key, "localhost", addr, http.MethodPut, path, body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "8448"}, "--listen: want host:port"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		err := run(t.Context(), tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
