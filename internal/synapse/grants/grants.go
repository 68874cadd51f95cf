// Package grants lists the privileges on Synapse's database that the
// Synapse feed (package synapse: the events and EDU sources) and its
// bookkeeping (package books) use, and no more: the role fedsender logs in
// to Synapse's PostgreSQL as needs exactly these. Tests create that role
// from the list (synapsefixture.Role), so a query outside it fails there.
package grants

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// Grant is what fedsender's database role may do on one of Synapse's
// tables, and why.
type Grant struct {
	Table      string
	Privileges []string
	Why        string
}

// Privileges on Synapse's tables.
const (
	Select = "SELECT"
	Insert = "INSERT"
	Update = "UPDATE"
	Delete = "DELETE"
)

// Tables is every privilege the feed (the events and EDU sources) and the
// bookkeeping (package books) use on Synapse's database, and no more: the
// role fedsender logs in as needs exactly these (and USAGE on the schema,
// CONNECT on the database). PostgreSQL checks SELECT too for the columns
// an UPDATE, DELETE or ON CONFLICT reads, hence SELECT on every table
// written.
var Tables = []Grant{
	// Events: what Synapse persisted, in stream order, and whom it goes to.
	{"events", []string{Select}, "the event stream: stream_ordering, sender, outlier, received_ts"},
	{"event_json", []string{Select}, "the PDU as stored (auth events for a rescinded invite), and internal_metadata (send_on_behalf_of, proactively_send, out_of_band_membership)"},
	{"event_edges", []string{Select}, "prev_events: the state before an event"},
	{"current_state_events", []string{Select}, "the joined servers of a room now (receipts, typing, presence)"},
	{"room_memberships", []string{Select}, "memberships by event: joined hosts at a state"},
	{"local_current_membership", []string{Select}, "local users' rooms (presence to interested servers)"},
	{"event_to_state_groups", []string{Select}, "the state group before an event"},
	{"state_groups_state", []string{Select}, "the state of a state group"},
	{"state_group_edges", []string{Select}, "state group deltas"},
	{"partial_state_rooms", []string{Select}, "partially joined rooms"},
	{"partial_state_rooms_servers", []string{Select}, "the servers listed at a partial join"},
	{"stream_positions", []string{Select}, "each event writer's persisted position: never read past the slowest"},
	{"federation_stream_position", []string{Select, Insert, Update, Delete}, "the sender's position for instance_name, as Synapse's sender keeps it; the rows of senders no longer configured removed at start, as Synapse does (the table is locked meanwhile, which UPDATE allows)"},
	// EDU sources.
	{"receipts_linearized", []string{Select}, "receipts of local users"},
	{"presence_stream", []string{Select}, "presence of local users"},
	{"device_federation_outbox", []string{Select, Delete}, "to-device messages for other servers; deleted after the destination's 200"},
	{"device_lists_outbound_pokes", []string{Select, Delete}, "device-list and signing-key updates owed; deleted after the destination's 200"},
	{"device_lists_outbound_last_success", []string{Select, Insert, Update}, "per destination and user, the last device-list update delivered (prev_id)"},
	{"devices", []string{Select}, "device ids and display names"},
	{"e2e_device_keys_json", []string{Select}, "device keys in device-list updates"},
	{"e2e_cross_signing_keys", []string{Select}, "master and self-signing keys (signing-key updates)"},
	{"e2e_cross_signing_signatures", []string{Select}, "signatures on device keys"},
	// Bookkeeping (package books).
	{"destinations", []string{Select, Insert, Update}, "retry timings and last_successful_stream_ordering (the admin API reads them); the server-up signal reads a cleared backoff"},
	{"destination_rooms", []string{Select, Insert, Update}, "per destination and room, the newest PDU queued; the admin API and catch-up read them"},
	{"cache_invalidation_stream_by_instance", []string{Select, Insert}, "retry timings changed: Synapse's processes drop their cached get_destination_retry_timings (with synapse.redis_url)"},
}

// Sequences are the sequences the role draws numbers from.
var Sequences = []Grant{
	{"cache_invalidation_stream_seq", []string{"USAGE"}, "the ids of the caches stream's rows"},
}

// Statements returns the SQL that gives role the Tables grants on the
// tables of schema (Synapse's is public) and the Sequences grants: USAGE on
// the schema, then one GRANT per table and sequence. CONNECT on the database is granted by whoever creates
// the role.
func Statements(schema, role string) []string {
	r, s := pgx.Identifier{role}.Sanitize(), pgx.Identifier{schema}.Sanitize()
	out := []string{"GRANT USAGE ON SCHEMA " + s + " TO " + r}
	for _, g := range Tables {
		t := pgx.Identifier{schema, g.Table}.Sanitize()
		out = append(out, "GRANT "+strings.Join(g.Privileges, ", ")+" ON TABLE "+t+" TO "+r)
	}
	for _, g := range Sequences {
		t := pgx.Identifier{schema, g.Table}.Sanitize()
		out = append(out, "GRANT "+strings.Join(g.Privileges, ", ")+" ON SEQUENCE "+t+" TO "+r)
	}
	return out
}
