package transaction

import (
	"encoding/json"
	"regexp"
	"testing"
)

func TestBuild(t *testing.T) {
	pdus := []PDU{
		{Raw: []byte(`{ "b": 1, "a": "x" }`), Canonical: []byte(`{"a":"x","b":1}`)},
		{Raw: []byte(`{"event_id":"$e"}`), Canonical: []byte(`{"event_id":"$e"}`)},
	}
	body, canonical := Build("origin.example", 1234, pdus)
	wantBody := `{"origin":"origin.example","origin_server_ts":1234,"pdus":[{ "b": 1, "a": "x" },{"event_id":"$e"}]}`
	wantCanon := `{"origin":"origin.example","origin_server_ts":1234,"pdus":[{"a":"x","b":1},{"event_id":"$e"}]}`
	if string(body) != wantBody {
		t.Errorf("body = %s\nwant %s", body, wantBody)
	}
	if string(canonical) != wantCanon {
		t.Errorf("canonical = %s\nwant %s", canonical, wantCanon)
	}
	if !json.Valid(body) {
		t.Error("body is not valid JSON")
	}
	empty, _ := Build("o", 1, nil)
	if string(empty) != `{"origin":"o","origin_server_ts":1,"pdus":[]}` {
		t.Errorf("empty body = %s", empty)
	}
}

func TestID(t *testing.T) {
	valid := regexp.MustCompile(`^[0-9A-Za-z_-]+$`)
	a := ID("k3x", []uint64{5, 9, 12})
	if a != ID("k3x", []uint64{5, 9, 12}) {
		t.Fatal("ID is not deterministic")
	}
	for _, other := range []string{
		ID("k3y", []uint64{5, 9, 12}),
		ID("k3x", []uint64{5, 12}),
		ID("k3x", []uint64{5, 10, 12}),
		ID("k3x", []uint64{5, 9, 12, 13}),
	} {
		if other == a {
			t.Fatalf("different batches share id %s", a)
		}
	}
	if !valid.MatchString(a) {
		t.Fatalf("ID %q has characters outside [0-9A-Za-z_-]", a)
	}
}

func TestBuildWithEDUsIsCanonical(t *testing.T) {
	pdus := []PDU{{Raw: []byte(`{ "a": 1 }`), Canonical: []byte(`{"a":1}`)}}
	edus := [][]byte{[]byte(`{"content":{"x":1},"edu_type":"m.typing"}`)}
	_, canonical := BuildWithEDUs("o", 1, pdus, edus)
	want := `{"edus":[{"content":{"x":1},"edu_type":"m.typing"}],"origin":"o","origin_server_ts":1,"pdus":[{"a":1}]}`
	if string(canonical) != want {
		t.Errorf("canonical = %s\nwant %s", canonical, want)
	}
	eduOnly, _ := BuildWithEDUs("o", 1, nil, edus)
	if string(eduOnly) != `{"edus":[{"content":{"x":1},"edu_type":"m.typing"}],"origin":"o","origin_server_ts":1,"pdus":[]}` {
		t.Errorf("EDU-only body = %s: pdus must be present", eduOnly)
	}
}

func TestIDWithEDUs(t *testing.T) {
	pdus := []uint64{5, 9}
	if IDWithEDUs("k", pdus, nil) != ID("k", pdus) {
		t.Error("without EDUs the id is not ID's")
	}
	a := IDWithEDUs("k", pdus, []uint64{3})
	if a != IDWithEDUs("k", pdus, []uint64{3}) {
		t.Fatal("not deterministic")
	}
	for _, other := range []string{ID("k", pdus), IDWithEDUs("k", pdus, []uint64{4}), IDWithEDUs("k", nil, []uint64{3}),
		IDWithEDUs("k", []uint64{5, 9, 3}, nil)} {
		if other == a {
			t.Errorf("different content, same id %s", a)
		}
	}
}
