package synapse

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// fixture is one recorded Synapse database with what an EDU source needs
// around it: a pool, a JetStream with fedsender's streams, and the deps.
type fixture struct {
	db   *pgxpool.Pool
	js   jetstream.JetStream
	deps EDUDeps
}

func newFixture(t *testing.T, dump string) *fixture {
	t.Helper()
	url := synapsefixture.Database(t, dump)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(db.Close)
	_, js, _ := projectiontest.JetStream(t)
	return &fixture{db: db, js: js, deps: EDUDeps{
		DB:       db,
		Routing:  Routing{ServerName: synapsefixture.HS1},
		Messages: streams.NewPublisher(js),
	}}
}

func (f *fixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// sent is one envelope as the feed would publish it.
type sent struct {
	Type         string
	Content      map[string]any
	Destinations []string
	ID, Source   string
}

// decode reads the messages back as the EDU reader will: each must pass
// fedsender's envelope validation.
func decode(t *testing.T, msgs []*nats.Msg) []sent {
	t.Helper()
	var out []sent
	for _, m := range msgs {
		if m.Subject != streams.EDUSubject {
			t.Fatalf("message on %q, want %q", m.Subject, streams.EDUSubject)
		}
		edu, err := streams.DecodeEDU(m.Data)
		if err != nil {
			t.Fatalf("envelope refused: %v\n%s", err, m.Data)
		}
		var content map[string]any
		if err := json.Unmarshal(edu.Content, &content); err != nil {
			t.Fatal(err)
		}
		out = append(out, sent{Type: edu.Type, Content: content, Destinations: edu.Destinations,
			ID: m.Header.Get(jetstream.MsgIDHeader), Source: m.Header.Get(HeaderSource)})
	}
	return out
}

// drain calls Next until the source says it has no more, and returns
// every message and the last position.
func drain(t *testing.T, s Source, from int64) ([]*nats.Msg, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var msgs []*nats.Msg
	for range 1000 {
		b, err := s.Next(ctx, from)
		if err != nil {
			t.Fatalf("%s: Next(%d): %v", s.Name(), from, err)
		}
		if b.Position < from {
			t.Fatalf("%s: Next(%d) went back to %d", s.Name(), from, b.Position)
		}
		msgs = append(msgs, b.Messages...)
		from = b.Position
		if !b.More {
			return msgs, from
		}
	}
	t.Fatalf("%s: still More after 1000 batches", s.Name())
	return nil, 0
}

// wire returns the EDUs of one type Synapse delivered in the main
// recording to one server, in order.
func wire(t *testing.T, file, eduType string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, tx := range synapsefixture.Transactions(t, file) {
		for _, e := range tx.Body.EDUs {
			if e.EDUType != eduType {
				continue
			}
			var c map[string]any
			if err := json.Unmarshal(e.Content, &c); err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
	}
	return out
}

// publish publishes msgs into JetStream and returns how many were stored
// (not dropped as duplicates).
func (f *fixture) publish(t *testing.T, msgs []*nats.Msg) int {
	t.Helper()
	stored := 0
	for _, m := range msgs {
		ack, err := f.js.PublishMsg(t.Context(), m)
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if !ack.Duplicate {
			stored++
		}
	}
	return stored
}
