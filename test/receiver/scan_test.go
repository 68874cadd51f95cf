package receiver

import (
	"encoding/json"
	"testing"
)

// scanIDs reads event_id and room_id with the fast walk.
func scanIDs(obj []byte) (ev, room string, evOK, roomOK bool, err error) {
	var evRaw, roomRaw []byte
	err = forEachMember(obj, func(key, val []byte) {
		switch string(key) {
		case `"event_id"`:
			evRaw = val
		case `"room_id"`:
			roomRaw = val
		}
	})
	ev, evOK = jsonString(evRaw)
	room, roomOK = jsonString(roomRaw)
	return ev, room, evOK, roomOK, err
}

// stdIDs reads them with encoding/json, keys matched exactly.
func stdIDs(obj []byte) (ev, room string, evOK, roomOK bool, err error) {
	var m map[string]json.RawMessage
	if err = json.Unmarshal(obj, &m); err != nil {
		return "", "", false, false, err
	}
	if m == nil { // null
		return "", "", false, false, errNotObject
	}
	evOK = json.Unmarshal(m["event_id"], &ev) == nil && len(m["event_id"]) > 0 && m["event_id"][0] == '"'
	roomOK = json.Unmarshal(m["room_id"], &room) == nil && len(m["room_id"]) > 0 && m["room_id"][0] == '"'
	if !evOK {
		ev = ""
	}
	if !roomOK {
		room = ""
	}
	return ev, room, evOK, roomOK, nil
}

var scanCases = []string{
	`{"event_id":"$a","room_id":"!r:x"}`,
	` { "room_id" : "!r:x" , "event_id" : "$a" } `,
	`{"content":{"event_id":"$inner","x":[1,{"room_id":"!no"}]},"event_id":"$outer","room_id":"!r"}`,
	`{"content":{"body":"a \"quoted\" }{ ][ string\\"},"event_id":"$a","room_id":"!r"}`,
	`{"content":"ends with backslash \\\\","event_id":"$b\\\\","room_id":"!r"}`,
	`{"event_id":"$\u00e9\n","room_id":"!\ud83d\ude00"}`,
	`{"event_id":"$a","event_id":"$last","room_id":"!r"}`,
	`{"event_id":42,"room_id":null}`,
	`{"depth":-12.5e3,"ok":true,"no":false,"n":null,"event_id":"$a","room_id":"!r"}`,
	`{"EVENT_ID":"$case","room_id":"!r"}`,
	`{"event\u005fid":"$escaped key","room_id":"!r"}`,
	`{}`,
	"{\"event_id\":\"$a\xff\",\"room_id\":\"!r\"}",
}

func TestScanMatchesEncodingJSON(t *testing.T) {
	for _, c := range scanCases {
		checkScan(t, []byte(c))
	}
}

func TestScanRejectsNonObjects(t *testing.T) {
	for _, c := range []string{`[]`, `"s"`, `1`, `null`, `true`} {
		if err := forEachMember([]byte(c), func(_, _ []byte) {}); err == nil {
			t.Errorf("forEachMember(%s) accepted a non-object", c)
		}
	}
	var got []string
	if err := forEachElement([]byte(` [ 1 , "a,]" , {"b":[2]} , [] ] `), func(v []byte) { got = append(got, string(v)) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{`1`, `"a,]"`, `{"b":[2]}`, `[]`}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("elements %q, want %q", got, want)
	}
	if err := forEachElement([]byte(`{}`), func([]byte) {}); err == nil {
		t.Error("forEachElement accepted an object")
	}
}

func FuzzScan(f *testing.F) {
	for _, c := range scanCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, obj []byte) {
		if !json.Valid(obj) {
			return // the receiver walks only bodies json.Valid accepted
		}
		checkScan(t, obj)
	})
}

func checkScan(t *testing.T, obj []byte) {
	t.Helper()
	ev, room, evOK, roomOK, err := scanIDs(obj)
	sev, sroom, sevOK, sroomOK, serr := stdIDs(obj)
	if (err != nil) != (serr != nil) {
		t.Fatalf("%s: scan error %v, encoding/json error %v", obj, err, serr)
	}
	if err != nil {
		return
	}
	if ev != sev || room != sroom || evOK != sevOK || roomOK != sroomOK {
		t.Fatalf("%s: scan (%q %v, %q %v), encoding/json (%q %v, %q %v)", obj, ev, evOK, room, roomOK, sev, sevOK, sroom, sroomOK)
	}
}
