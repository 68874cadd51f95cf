package e2e

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/test/receiver"
)

// TestPostgresReadModel: with postgres.url set, fedsender migrates the
// schema, projects its destinations into Synapse's destinations table and
// their rooms into destination_rooms, and answers the admin API from them;
// while PostgreSQL is down the admin API and /readyz answer 503 and
// sending goes on; after a restart nothing is lost.
func TestPostgresReadModel(t *testing.T) {
	srv := pgtest.Own(t)
	schema := pgtest.Schema(t, srv.URL)
	h := newHarness(t, func(c *config.Config) {
		c.Postgres.URL, c.Postgres.Schema = srv.URL, schema
	})
	r := h.receiver(nil)
	d := r.ServerName()
	h.publish("!a:origin.test", 1, d)
	eventually(t, 15*time.Second, func() bool {
		lsso := h.destination(d).LastSuccessfulStreamOrdering
		return lsso != nil && *lsso >= 1
	}, "the admin API never showed %s's last_successful_stream_ordering", d)

	// /rooms comes from destination_rooms, filled from the fan-out.
	h.publish("!b:origin.test", 1, d, "unreachable.invalid")
	eventually(t, 15*time.Second, func() bool {
		return slices.Equal(h.rooms(d), []roomInfo{{"!a:origin.test", 1}, {"!b:origin.test", 2}})
	}, "/rooms of %s never showed both rooms", d)
	if got := h.rooms("unreachable.invalid"); !slices.Equal(got, []roomInfo{{"!b:origin.test", 2}}) {
		t.Errorf("/rooms of unreachable.invalid = %v", got)
	}
	// Caught up: the lag gauge says so for both streams.
	resp, err := http.Get("http://" + h.svc.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, stream := range []string{"FEDSENDER_DEST_EVENTS", "FEDSENDER_PDU"} {
		if line := `fedsender_postgres_projection_lag_messages{stream="` + stream + `"} 0`; !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}

	pool := connectPG(t, srv.URL)
	var lsso int64
	if err := pool.QueryRow(t.Context(), "SELECT last_successful_stream_ordering FROM "+schema+".destinations WHERE destination = $1",
		d).Scan(&lsso); err != nil || lsso < 1 {
		t.Fatalf("destinations row of %s: last_successful_stream_ordering %d, %v", d, lsso, err)
	}

	// PostgreSQL down: the admin API answers 503 (after the read that
	// fails), and delivery does not wait for it.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() bool {
		code, _ := h.adminRaw("GET", "/_synapse/admin/v1/federation/destinations")
		return code == http.StatusServiceUnavailable
	}, "the admin API kept answering with PostgreSQL down")
	if code, _ := h.adminRaw("GET", "/_synapse/admin/v1/federation/destinations/"+d+"/rooms"); code != http.StatusServiceUnavailable {
		t.Errorf("/rooms with PostgreSQL down: %d, want 503", code)
	}
	if code, body := h.adminRaw("GET", "/readyz"); code != http.StatusServiceUnavailable || body != "PostgreSQL cannot be read" {
		t.Errorf("/readyz with PostgreSQL down: %d %q", code, body)
	}
	h.publish("!a:origin.test", 2, d)
	r.WaitPDUs(t, 2) // sending does not wait for PostgreSQL
	r.SetFault(receiver.Fault{Status: http.StatusInternalServerError})
	h.publish("!a:origin.test", 3, d)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool {
		return slices.Equal(h.rooms(d), []roomInfo{{"!a:origin.test", 4}, {"!b:origin.test", 2}})
	}, "/rooms of %s never showed the PDU published while PostgreSQL was down", d)
	// What happened while PostgreSQL was down reaches it: the second PDU's
	// success, then the third's failure.
	eventually(t, 30*time.Second, func() bool {
		dest := h.destination(d)
		return dest.RetryLastTS != 0 && dest.LastSuccessfulStreamOrdering != nil && *dest.LastSuccessfulStreamOrdering >= 2
	}, "what %s did while PostgreSQL was down never reached it", d)
	pool.Close() // its connections died with the server
	pool = connectPG(t, srv.URL)
	var retry int64
	if err := pool.QueryRow(t.Context(), "SELECT retry_last_ts, last_successful_stream_ordering FROM "+schema+".destinations WHERE destination = $1",
		d).Scan(&retry, &lsso); err != nil || retry == 0 || lsso < 2 {
		t.Fatalf("destinations row of %s: retry_last_ts %d, last_successful_stream_ordering %d, %v", d, retry, lsso, err)
	}
}

// roomInfo is an entry of Synapse's /rooms answer.
type roomInfo struct {
	RoomID         string `json:"room_id"`
	StreamOrdering uint64 `json:"stream_ordering"`
}

// rooms returns a destination's rooms from the admin API (nil unless 200).
func (h *harness) rooms(dest string) []roomInfo {
	h.t.Helper()
	var out struct {
		Rooms []roomInfo `json:"rooms"`
	}
	if h.admin("GET", "/_synapse/admin/v1/federation/destinations/"+dest+"/rooms", &out) != http.StatusOK {
		return nil
	}
	return out.Rooms
}

// connectPG opens a pool on url, closed when the test ends.
func connectPG(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
