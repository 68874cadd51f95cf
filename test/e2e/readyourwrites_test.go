package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// TestResetIsVisibleToTheNextRead: once reset_connection has answered 200,
// the read that follows at once (the synapse-admin UI reloads the row 35 ms
// later) shows the timings cleared, as Synapse does (it writes before it
// answers): over HTTP and over the micro service, with the KV read model
// and with PostgreSQL.
func TestResetIsVisibleToTheNextRead(t *testing.T) {
	models := []struct {
		name   string
		mutate func(t *testing.T) func(*config.Config)
	}{
		{"kv", func(*testing.T) func(*config.Config) { return nil }},
		{"postgres", func(t *testing.T) func(*config.Config) {
			srv := pgtest.Own(t)
			schema := pgtest.Schema(t, srv.URL)
			return func(c *config.Config) { c.Postgres.URL, c.Postgres.Schema = srv.URL, schema }
		}},
	}
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			h := newHarness(t, m.mutate(t))
			r := h.receiver(nil)
			d := r.ServerName()
			path := "/_synapse/admin/v1/federation/destinations/" + d

			failing := func(n int) {
				t.Helper()
				r.SetFault(receiver.Fault{Status: http.StatusInternalServerError})
				h.publish("!a:origin.test", n, d)
				eventually(t, 15*time.Second, func() bool { return h.destination(d).RetryLastTS != 0 }, "admin API never showed %s failing", d)
				// The receiver is healthy again, so the destination's
				// wake-up after the reset succeeds: the timings stay
				// cleared whichever of the two events a read shows.
				r.SetFault(receiver.Fault{})
			}
			cleared := func(how, body string) {
				t.Helper()
				var got destinationInfo
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("%s: %v in %s", how, err, body)
				}
				if got.RetryLastTS != 0 || got.RetryInterval != 0 || got.FailureTS != nil {
					t.Errorf("%s right after the reset = %s; want retry_last_ts 0, retry_interval 0, failure_ts null", how, body)
				}
			}

			failing(1)
			if code, body := h.adminRaw("POST", path+"/reset_connection"); code != http.StatusOK {
				t.Fatalf("HTTP reset_connection = %d %s", code, body)
			}
			_, body := h.adminRaw("GET", path)
			cleared("HTTP details", body)
			var list struct{ Destinations []json.RawMessage }
			_, body = h.adminRaw("GET", "/_synapse/admin/v1/federation/destinations?destination="+d)
			if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Destinations) != 1 {
				t.Fatalf("HTTP list = %s", body)
			}
			cleared("HTTP list", string(list.Destinations[0]))

			failing(2)
			req, _ := json.Marshal(map[string]string{"destination": d})
			msg, err := h.nc.Request(streams.AdminSubject("reset"), req, 15*time.Second)
			if err != nil || string(msg.Data) != "{}" {
				t.Fatalf("micro reset = %v %s", err, msgData(msg))
			}
			msg, err = h.nc.Request(streams.AdminSubject("show"), req, 15*time.Second)
			if err != nil {
				t.Fatalf("micro show: %v", err)
			}
			cleared("micro show", string(msg.Data))
		})
	}
}

// msgData is a reply's body and its micro error header, for messages.
func msgData(m *nats.Msg) string {
	if m == nil {
		return "(no reply)"
	}
	return string(m.Data) + " " + m.Header.Get("Nats-Service-Error")
}
