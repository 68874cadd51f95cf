package synapse_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
	"github.com/fedsender/fedsender/internal/projection/projectiontest"
	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/internal/synapse/replication"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// startFeed runs a feed of e's events source until the test ends (or
// stop is called) and returns it.
func startFeed(t *testing.T, e *env, holder string, poll time.Duration) (*synapse.Feed, func()) {
	t.Helper()
	f := synapse.NewFeed(synapse.FeedOptions{JS: e.js, Sources: []synapse.Source{e.events(nil)}, Holder: holder,
		PollInterval: poll, Lease: lease.Options{TTL: 2 * time.Second}, Log: slog.New(slog.DiscardHandler)})
	stop := projectiontest.Start(t, f.Run)
	return f, stop
}

// published returns the event ids in the PDU stream, in order, and the
// stream orderings their headers carry.
func published(t *testing.T, js jetstream.JetStream) ([]string, []int64) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, streams.PDUStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	var sos []int64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		so, _ := strconv.ParseInt(m.Header.Get(synapse.HeaderStreamOrdering), 10, 64)
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		sos = append(sos, so)
	}
	return ids, sos
}

func savedPosition(t *testing.T, js jetstream.JetStream, name string) int64 {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), streams.SynapsePositionBucket)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), name)
	if err != nil {
		return -2
	}
	pos, _ := strconv.ParseInt(string(entry.Value()), 10, 64)
	return pos
}

func (e *env) federationPosition(t *testing.T) string {
	t.Helper()
	var out string
	err := e.pool.QueryRow(context.Background(), `SELECT string_agg(type || ' ' || stream_id || ' ' || instance_name, ', ' ORDER BY type, instance_name)
		FROM federation_stream_position`).Scan(&out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFeedReplayAfterCrash: a feed stopped after publishing a batch but
// before saving its position (what kill -9 at that moment leaves) starts
// again from the saved position: JetStream drops every republished PDU as
// a duplicate, and nothing is lost.
func TestFeedReplayAfterCrash(t *testing.T) {
	e := newEnv(t, synapsefixture.Unsent)
	want, _ := drain(t, e.events(nil), -1)

	// The crashed run: the first batch published, the position not saved.
	src := synapse.NewEvents(synapse.EventsOptions{DB: e.feedPool, InstanceName: "fedsender", BatchSize: 40,
		Routing: synapse.Routing{ServerName: synapsefixture.HS1}, Publisher: streams.NewPublisher(e.js)})
	b, err := src.Next(context.Background(), -1)
	if err != nil || len(b.Messages) == 0 {
		t.Fatalf("first batch: %d messages, %v", len(b.Messages), err)
	}
	for _, m := range b.Messages {
		if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if got := savedPosition(t, e.js, "events"); got != -2 {
		t.Fatalf("a position was saved: %d", got)
	}

	startFeed(t, e, "replica-a", 100*time.Millisecond)
	projectiontest.Eventually(t, 60*time.Second, func() bool { return savedPosition(t, e.js, "events") == 154 },
		"the events position to reach 154")
	ids, sos := published(t, e.js)
	if len(ids) != len(want) {
		t.Fatalf("PDU stream holds %d PDUs, want %d (each once)", len(ids), len(want))
	}
	for i := range want {
		if ids[i] != want[i].EventID || sos[i] != want[i].StreamOrdering {
			t.Fatalf("PDU %d: %s (stream ordering %d), want %s (%d), in stream order", i, ids[i], sos[i], want[i].EventID, want[i].StreamOrdering)
		}
	}
	// Synapse's own table follows, for Synapse's sender if it is put back.
	projectiontest.Eventually(t, 10*time.Second, func() bool {
		return e.federationPosition(t) == "events 154 fedsender, federation -1 fedsender"
	}, "federation_stream_position to be events 154 fedsender (it is %s)", e.federationPosition(t))
}

// TestTwoFeeds: two replicas on one NATS; one feeds, the other waits, and
// takes over when the first stops.
func TestTwoFeeds(t *testing.T) {
	e := newEnv(t, synapsefixture.Unsent)
	want, _ := drain(t, e.events(nil), -1)
	a, stopA := startFeed(t, e, "replica-a", 100*time.Millisecond)
	projectiontest.Eventually(t, 30*time.Second, a.Active, "replica-a to become active")
	b, _ := startFeed(t, e, "replica-b", 100*time.Millisecond)
	projectiontest.Eventually(t, 60*time.Second, func() bool { return savedPosition(t, e.js, "events") == 154 },
		"the events position to reach 154")
	if b.Active() {
		t.Fatal("both replicas are active")
	}
	if ids, _ := published(t, e.js); len(ids) != len(want) {
		t.Fatalf("PDU stream holds %d PDUs, want %d", len(ids), len(want))
	}

	stopA()
	projectiontest.Eventually(t, 30*time.Second, b.Active, "replica-b to take over")
	r2 := readFacts(t, "unsent/facts.json").Rooms["R2"]
	id := e.insert(t, message(r2, alice))[0]
	projectiontest.Eventually(t, 30*time.Second, func() bool {
		ids, _ := published(t, e.js)
		return len(ids) == len(want)+1 && ids[len(ids)-1] == id
	}, "replica-b to publish the new event")
}

// TestFeedWakeUpAndPolling: with replication up, an RDATA row wakes the
// feed at once (the safety poll is 10 s here); with Redis down, the feed
// says it polls, and does.
func TestFeedWakeUpAndPolling(t *testing.T) {
	e := newEnv(t, synapsefixture.Unsent)
	redisURL := synapsefixture.Redis(t)
	f := synapse.NewFeed(synapse.FeedOptions{JS: e.js, Sources: []synapse.Source{e.events(nil)}, Holder: "replica-a",
		PollInterval: time.Second, Log: slog.New(slog.DiscardHandler)})
	rep, err := replication.New(replication.Options{URL: redisURL, Channel: synapsefixture.HS1,
		OnRow: f.OnRow, OnPosition: f.OnPosition, OnState: f.OnState, MaxBackoff: 200 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Polling() {
		t.Fatal("polling is off before replication is up")
	}
	projectiontest.Start(t, f.Run, rep.Run)
	projectiontest.Eventually(t, 30*time.Second, func() bool { return !f.Polling() }, "replication to come up")
	projectiontest.Eventually(t, 60*time.Second, func() bool { return savedPosition(t, e.js, "events") == 154 },
		"the backlog to be fed")

	r2 := readFacts(t, "unsent/facts.json").Rooms["R2"]
	rc := redisClient(t, redisURL)
	var worst time.Duration
	for i := range 5 {
		ids := e.insert(t, message(r2, alice))
		var so int64
		if err := e.pool.QueryRow(context.Background(), "SELECT stream_ordering FROM events WHERE event_id = $1", ids[0]).Scan(&so); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		line := fmt.Sprintf(`RDATA events master %d ["ev",[%q,%q,"m.room.message",null,null,null,null,false,false]]`, so, ids[0], r2)
		if err := rc.Publish(context.Background(), synapsefixture.HS1, line).Err(); err != nil {
			t.Fatal(err)
		}
		projectiontest.Eventually(t, 5*time.Second, func() bool {
			got, _ := published(t, e.js)
			return len(got) > 0 && got[len(got)-1] == ids[0]
		}, "event %d to be published after its RDATA", i)
		worst = max(worst, time.Since(start))
	}
	t.Logf("RDATA to envelope published: worst of 5 %s", worst)
	if worst > 2*time.Second {
		t.Errorf("RDATA to envelope published took %s: the wake-up did not work (the poll is 10 s)", worst)
	}

	u, _ := url.Parse(redisURL)
	_ = rc.Shutdown(context.Background()).Err()
	projectiontest.Eventually(t, 30*time.Second, f.Polling, "the feed to say it polls (Redis at %s is down)", u.Host)
	id := e.insert(t, message(r2, alice))[0]
	projectiontest.Eventually(t, 10*time.Second, func() bool {
		got, _ := published(t, e.js)
		return got[len(got)-1] == id
	}, "the event to be published by polling")
}

// TestServerUp replays the recording's caches rows for hs3: the first two
// announce the backoff Synapse set (nothing is signalled), the third its
// clearing (hs3 is signalled up). REMOTE_SERVER_UP, which Synapse
// published when it marked hs3 down, signals nothing.
func TestServerUp(t *testing.T) {
	e := newEnv(t, synapsefixture.Main)
	nc := e.js.Conn()
	sub, err := nc.SubscribeSync(streams.ServerUpSubject)
	if err != nil {
		t.Fatal(err)
	}
	su := synapse.NewServerUp(synapse.ServerUpOptions{DB: e.feedPool, NATS: nc,
		Routing: synapse.Routing{ServerName: synapsefixture.HS1}, Log: slog.New(slog.DiscardHandler)})
	f := synapse.NewFeed(synapse.FeedOptions{JS: e.js, Observers: []synapse.Observer{su}, Holder: "replica-a",
		Log: slog.New(slog.DiscardHandler)})
	redisURL := synapsefixture.Redis(t)
	rep, err := replication.New(replication.Options{URL: redisURL, Channel: synapsefixture.HS1,
		OnRow: f.OnRow, OnState: f.OnState, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	projectiontest.Start(t, f.Run, su.Run, rep.Run)
	projectiontest.Eventually(t, 30*time.Second, func() bool { return f.Active() && !f.Polling() }, "the feed to be active and subscribed")

	var lines []synapsefixture.Line
	for _, l := range synapsefixture.ReplicationLog(t, "redis-replication.log") {
		if strings.Contains(l.Command, "get_destination_retry_timings") || strings.HasPrefix(l.Command, "REMOTE_SERVER_UP") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("the recording has %d such lines, want 3 caches rows and 2 REMOTE_SERVER_UP", len(lines))
	}
	// While hs3 was down: its row as Synapse left it.
	e.exec(t, "UPDATE destinations SET retry_last_ts = $1, retry_interval = 600000, failure_ts = $1 WHERE destination = $2",
		lines[0].T, synapsefixture.HS3)
	synapsefixture.Publish(t, redisURL, lines[:4])
	if m, err := sub.NextMsg(time.Second); err == nil {
		t.Fatalf("signalled while hs3 was backing off: %s", m.Data)
	}
	e.exec(t, "UPDATE destinations SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL WHERE destination = $1", synapsefixture.HS3)
	synapsefixture.Publish(t, redisURL, lines[4:])
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no server-up signal after Synapse cleared hs3's backoff: %v", err)
	}
	if want := `{"destination":"localhost:28483"}`; string(m.Data) != want {
		t.Errorf("signal %s, want %s", m.Data, want)
	}
}
