package synapse_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// eduFixture is one recorded Synapse database with what an EDU source needs
// around it: a JetStream with fedsender's streams, and the deps, whose
// pool logs in as the role holding exactly synapse.Grants. db is Synapse's
// own login, for the tests to write as Synapse would.
type eduFixture struct {
	db   *pgxpool.Pool
	js   jetstream.JetStream
	deps synapse.EDUDeps
}

func newEDUFixture(t *testing.T, dump string) *eduFixture {
	t.Helper()
	url := synapsefixture.Database(t, dump)
	pool := func(url string) *pgxpool.Pool {
		db, err := pgxpool.New(t.Context(), url)
		if err != nil {
			t.Fatalf("pool: %v", err)
		}
		t.Cleanup(db.Close)
		return db
	}
	db, feed := pool(url), pool(synapsefixture.Role(t, url))
	_, js, _ := projectiontest.JetStream(t)
	return &eduFixture{db: db, js: js, deps: synapse.EDUDeps{
		DB:       feed,
		Routing:  synapse.Routing{ServerName: synapsefixture.HS1},
		Messages: streams.NewPublisher(js),
	}}
}

func (f *eduFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// eduSent is one envelope as the feed would publish it.
type eduSent struct {
	Type         string
	Content      map[string]any
	Destinations []string
	ID, Source   string
}

// decodeEDUs reads the messages back as the EDU reader will: each must pass
// fedsender's envelope validation.
func decodeEDUs(t *testing.T, msgs []*nats.Msg) []eduSent {
	t.Helper()
	var out []eduSent
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
		out = append(out, eduSent{Type: edu.Type, Content: content, Destinations: edu.Destinations,
			ID: m.Header.Get(jetstream.MsgIDHeader), Source: m.Header.Get(synapse.HeaderSource)})
	}
	return out
}

// drainSource calls Next until the source says it has no more, and returns
// every message and the last position.
func drainSource(t *testing.T, s synapse.Source, from int64) ([]*nats.Msg, int64) {
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

// wireEDUs returns the EDUs of one type Synapse delivered in the main
// recording to one server, in order.
func wireEDUs(t *testing.T, file, eduType string) []map[string]any {
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
func (f *eduFixture) publish(t *testing.T, msgs []*nats.Msg) int {
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

func TestNewEDUSources(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	sources, err := synapse.NewEDUSources(f.deps)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sources {
		names = append(names, s.Name())
	}
	if want := []string{"to_device", "device_lists", "receipts", "presence", "typing"}; !slices.Equal(names, want) {
		t.Fatalf("sources %q, want %q", names, want)
	}
	for _, missing := range []func(*synapse.EDUDeps){
		func(d *synapse.EDUDeps) { d.DB = nil },
		func(d *synapse.EDUDeps) { d.Messages = nil },
		func(d *synapse.EDUDeps) { d.Routing.ServerName = "" },
	} {
		d := f.deps
		missing(&d)
		if _, err := synapse.NewEDUSources(d); err == nil {
			t.Errorf("NewEDUSources(%+v) accepted", d)
		}
	}
}
