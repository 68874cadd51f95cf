package streams

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestDecodeEDU(t *testing.T) {
	big := `{"edu_type":"m.direct_to_device","content":{"b":"` + strings.Repeat("x", MaxEDUSize) + `"},"destinations":["a.org"]}`
	tests := []struct {
		name    string
		in      string
		dests   []string
		refused []int
		err     string // refused whole
	}{
		{name: "valid", in: `{"edu_type":"m.typing","content":{"room_id":"!r:o","user_id":"@u:o","typing":true},"destinations":["a.org","B.org"],"key":"k"}`,
			dests: []string{"a.org", "b.org"}},
		{name: "invalid destination refused alone", in: `{"edu_type":"m.typing","content":{},"destinations":["[::1","a.org"]}`,
			dests: []string{"a.org"}, refused: []int{0}},
		{name: "not JSON", in: `{"edu_type":`, err: "not a JSON EDU envelope"},
		{name: "no edu_type", in: `{"edu_type":"","content":{},"destinations":["a.org"]}`, err: "edu_type is missing"},
		{name: "no destinations", in: `{"edu_type":"m.typing","content":{}}`, err: "destinations is missing or empty"},
		{name: "content not an object", in: `{"edu_type":"m.typing","content":[1],"destinations":["a.org"]}`, err: "content is not a JSON object"},
		{name: "content missing", in: `{"edu_type":"m.typing","destinations":["a.org"]}`, err: "content is missing"},
		{name: "over the size limit", in: big, err: "over the 65536-byte limit"},
		{name: "unknown field", in: `{"edu_type":"m.typing","content":{},"destinations":["a.org"],"x":1}`, err: `unknown field "x"`},
		{name: "no valid destination", in: `{"edu_type":"m.typing","content":{},"destinations":["a b"]}`, err: "no valid destination"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			edu, err := DecodeEDU([]byte(tt.in))
			if tt.err != "" {
				if !errors.Is(err, ErrInvalidEnvelope) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(edu.Destinations, tt.dests) {
				t.Errorf("destinations %q, want %q", edu.Destinations, tt.dests)
			}
			var refused []int
			for _, r := range edu.Refused {
				refused = append(refused, r.Index)
			}
			if !slices.Equal(refused, tt.refused) {
				t.Errorf("refused %v, want %v", refused, tt.refused)
			}
		})
	}
}

func TestIsEDU(t *testing.T) {
	for in, want := range map[string]bool{
		`{"edu_type":"m.typing","content":{}}`:      true,
		`{"edu_type":""}`:                           true, // an EDU, refused as one
		`{"room_id":"!r","event_id":"$e","pdu":{}}`: false,
		`not json`: false,
		`{"pdu":{"edu_type":"nested is not an EDU line"}}`: false,
	} {
		if got := IsEDU([]byte(in)); got != want {
			t.Errorf("IsEDU(%s) = %v, want %v", in, got, want)
		}
	}
}

func TestEDUDestinationDeadLetterHoldsOnlyThatDestination(t *testing.T) {
	edu, err := DecodeEDU([]byte(`{"edu_type":"m.typing","content":{"a":1},"destinations":["a.org","[::1"],"key":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	dl, err := EDUDestinationDeadLetter(edu, 7, edu.Refused[0])
	if err != nil {
		t.Fatal(err)
	}
	if dl.Subject != DeadLetterEDU || dl.Header.Get("Nats-Msg-Id") != "edu-7-1" {
		t.Errorf("subject %s id %s", dl.Subject, dl.Header.Get("Nats-Msg-Id"))
	}
	if want := `{"edu_type":"m.typing","content":{"a":1},"destinations":["[::1"],"key":"k"}`; string(dl.Data) != want {
		t.Errorf("record %s, want %s", dl.Data, want)
	}
	if _, err := Validate(dl.Data); err == nil {
		t.Error("the record's envelope validates: a replay would not be refused")
	}
}
