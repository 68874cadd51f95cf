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
