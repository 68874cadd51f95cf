//go:build interop

package interop

import (
	"encoding/json"
	"net/url"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// remoteRoom is a Dendrite room that a user of the origin joined over
// federation. It builds that user's events one on top of the other, with
// the auth events, prev event, depth, hashes and signature a homeserver
// gives them, so Dendrite accepts them only when they arrive in order.
type remoteRoom struct {
	o       *origin
	id      string
	user    string
	version gomatrixserverlib.IRoomVersion
	auth    []string // the create event, the power levels, the user's join
	prev    string
	depth   int64
}

// join joins user (of the origin) to roomID on dest: make_join, then
// send_join of the join event signed with the origin's key.
func (o *origin) join(dest, roomID, user string) *remoteRoom {
	o.t.Helper()
	versions := url.Values{}
	for v := range gomatrixserverlib.StableRoomVersions() {
		versions.Add("ver", string(v))
	}
	var made struct {
		Event       gomatrixserverlib.ProtoEvent  `json:"event"`
		RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
	}
	o.federation("GET", dest, "/_matrix/federation/v1/make_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(user)+"?"+versions.Encode(), nil, &made)
	version, err := gomatrixserverlib.GetRoomVersion(made.RoomVersion)
	if err != nil {
		o.t.Fatalf("make_join: %v", err)
	}
	r := &remoteRoom{o: o, id: roomID, user: user, version: version}
	join := r.build(&made.Event)

	var joined struct {
		State []json.RawMessage `json:"state"`
	}
	o.federation("PUT", dest, "/_matrix/federation/v2/send_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()), &joined)
	for _, raw := range joined.State {
		ev, err := version.NewEventFromTrustedJSON(raw, false)
		if err != nil {
			o.t.Fatalf("send_join: state event: %v", err)
		}
		if (ev.Type() == spec.MRoomCreate || ev.Type() == spec.MRoomPowerLevels) && ev.StateKeyEquals("") {
			r.auth = append(r.auth, ev.EventID())
		}
	}
	if len(r.auth) != 2 {
		o.t.Fatalf("send_join: the room state lacks its create event or power levels: %d of 2 found", len(r.auth))
	}
	r.auth = append(r.auth, join.EventID())
	r.prev, r.depth = join.EventID(), join.Depth()
	return r
}

// message builds the user's next m.room.message, on top of the previous
// event the user built.
func (r *remoteRoom) message(body string) gomatrixserverlib.PDU {
	r.o.t.Helper()
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   r.user,
		RoomID:     r.id,
		Type:       "m.room.message",
		PrevEvents: []string{r.prev},
		AuthEvents: r.auth,
		Depth:      r.depth + 1,
	}
	if err := proto.SetContent(map[string]string{"msgtype": "m.text", "body": body}); err != nil {
		r.o.t.Fatal(err)
	}
	ev := r.build(&proto)
	r.prev, r.depth = ev.EventID(), ev.Depth()
	return ev
}

// build hashes and signs proto as an event of the origin.
func (r *remoteRoom) build(proto *gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
	r.o.t.Helper()
	ev, err := r.version.NewEventBuilderFromProtoEvent(proto).Build(time.Now(),
		spec.ServerName(r.o.name), gomatrixserverlib.KeyID(r.o.key.KeyID()), r.o.key.Private)
	if err != nil {
		r.o.t.Fatalf("build %s event: %v", proto.Type, err)
	}
	return ev
}
