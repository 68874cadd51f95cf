package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fedsender/fedsender/internal/config"
	"github.com/fedsender/fedsender/internal/projection/pgprojection/pgtest"
	"github.com/fedsender/fedsender/streams"
	"github.com/fedsender/fedsender/test/receiver"
)

// TestPendingMustDeliverEDUsShowInBothReadModels: an operator reading a
// destination's document (`nats kv get fedsender-destinations <token>`) or
// its row in PostgreSQL sees how many to-device messages and device-list
// updates it has not acknowledged yet; typing (droppable) is not counted;
// once the destination is back and acknowledged them, both show 0.
func TestPendingMustDeliverEDUsShowInBothReadModels(t *testing.T) {
	url := pgtest.URL(t)
	schema := pgtest.Schema(t, url)
	h := newHarness(t, func(c *config.Config) {
		c.Postgres.URL, c.Postgres.Schema = url, schema
	})
	r := h.receiver(nil)
	d := r.ServerName()
	r.SetFault(receiver.Fault{Status: http.StatusServiceUnavailable})
	for i := range 3 {
		id := fmt.Sprintf("p%d", i)
		h.publishEDU("m.direct_to_device", "", toDeviceContent(id), id, d)
	}
	h.publishEDU("m.device_list_update", "", `{"user_id":"@alice:origin.test","device_id":"A","stream_id":1,"deleted":true}`, "", d)
	h.publishEDU("m.typing", "", `{"room_id":"!a:origin.test","typing":true,"user_id":"@alice:origin.test"}`, "", d)

	eventually(t, 15*time.Second, func() bool { return kvPending(t, h, d) == 4 && pgPending(t, url, schema, d) == 4 },
		"the read models never showed %s's 4 pending must-deliver EDUs: KV %d, PostgreSQL %d",
		d, kvPending(t, h, d), pgPending(t, url, schema, d))

	r.SetFault(receiver.Fault{})
	eventually(t, 10*time.Second, func() bool {
		return h.admin("POST", "/_synapse/admin/v1/federation/destinations/"+d+"/reset_connection", nil) == http.StatusOK
	}, "reset_connection of %s never answered 200", d)
	eventually(t, 15*time.Second, func() bool { return kvPending(t, h, d) == 0 && pgPending(t, url, schema, d) == 0 },
		"after %s acknowledged them the read models still show pending EDUs: KV %d, PostgreSQL %d",
		d, kvPending(t, h, d), pgPending(t, url, schema, d))
	if got := len(eduField(r, "m.direct_to_device", "message_id")); got != 3 {
		t.Errorf("%s got %d to-device messages, want 3", d, got)
	}
	r.RequireNoViolations(t)
}

// kvPending is pending_edus of d's document in the KV read model (-1 when
// there is no document yet).
func kvPending(t *testing.T, h *harness, d string) int64 {
	t.Helper()
	kv, err := h.js.KeyValue(t.Context(), streams.DestinationBucket)
	if err != nil {
		t.Fatalf("open %s: %v", streams.DestinationBucket, err)
	}
	e, err := kv.Get(t.Context(), streams.EncodeToken(d))
	if err != nil {
		return -1
	}
	var doc struct {
		PendingEDUs int64 `json:"pending_edus"`
	}
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		t.Fatalf("document of %s: %v", d, err)
	}
	return doc.PendingEDUs
}

// pgPending is pending_edus of d's row in PostgreSQL (-1 when no row yet).
func pgPending(t *testing.T, url, schema, d string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(ctx)
	var n int64
	err = c.QueryRow(ctx, "SELECT pending_edus FROM "+schema+".destinations WHERE destination = $1", d).Scan(&n)
	if err != nil {
		return -1
	}
	return n
}
