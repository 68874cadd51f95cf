package streams

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/internal/servername"
)

func TestDecodePDUDestinations(t *testing.T) {
	tests := []struct {
		name    string
		dests   string
		want    []string
		refused []int  // indexes
		dups    int    // duplicates dropped
		err     string // the envelope is refused whole
	}{
		{name: "valid", dests: `["a.org","b.org:8448"]`, want: []string{"a.org", "b.org:8448"}},
		{name: "host case is one destination", dests: `["Matrix.ORG","matrix.org","MATRIX.org:8448"]`,
			want: []string{"matrix.org", "matrix.org:8448"}, dups: 1},
		{name: "invalid ones refused one by one", dests: `["127.0.0.1:1","[::1","bad name","a.org"]`,
			want: []string{"127.0.0.1:1", "a.org"}, refused: []int{1, 2}},
		{name: "no valid destination", dests: `["[::1","a b"]`, err: `no valid destination: destinations[0] "[::1"`},
		{name: "empty", dests: `[]`, err: "destinations is missing or empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pdu, err := DecodePDU([]byte(`{"room_id":"!r:a.org","event_id":"$e","pdu":{},"destinations":` + tt.dests + `}`))
			if tt.err != "" {
				if !errors.Is(err, ErrInvalidEnvelope) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pdu.Destinations, tt.want) || pdu.DuplicateDestinations != tt.dups {
				t.Errorf("destinations %q (%d duplicates), want %q (%d)", pdu.Destinations, pdu.DuplicateDestinations, tt.want, tt.dups)
			}
			var refused []int
			for _, r := range pdu.Refused {
				refused = append(refused, r.Index)
				if !errors.Is(r, servername.ErrInvalid) {
					t.Errorf("refused %v does not wrap servername.ErrInvalid", r)
				}
			}
			if !slices.Equal(refused, tt.refused) {
				t.Errorf("refused indexes %v, want %v", refused, tt.refused)
			}
		})
	}
}

func TestDropOrigin(t *testing.T) {
	dests := []string{"a.org", "localhost", "b.org"}
	if got := DropOrigin(dests, "LOCALHOST"); !slices.Equal(got, []string{"a.org", "b.org"}) {
		t.Errorf("DropOrigin = %q", got)
	}
	if !slices.Equal(dests, []string{"a.org", "localhost", "b.org"}) {
		t.Errorf("DropOrigin changed its input: %q", dests)
	}
	if got := DropOrigin(dests, "localhost:8448"); !slices.Equal(got, dests) {
		t.Errorf("another port is another server: DropOrigin = %q", got)
	}
}
