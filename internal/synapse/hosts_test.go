package synapse_test

import (
	"slices"
	"testing"

	"github.com/fedsender/fedsender/internal/synapse"
	"github.com/fedsender/fedsender/test/synapsefixture"
)

// Rooms of the recording without a sender (unsent/facts.json), at its end.
const (
	unsentR1 = "!nPnUIHvlTqHThRlUUP:localhost:28481" // alice, bob; carol banned
	unsentR2 = "!hQsgHMAbDhsbXcUESz:localhost:28481" // alice, bob
	unsentR3 = "!GRzjfueFdsCLpzbsBO:localhost:28481" // alice, carol
	unsentR4 = "!dccxkfPuSHVpigMHbB:localhost:28482" // bob's room: alice, carol
)

func TestRoomHosts(t *testing.T) {
	f := newEDUFixture(t, synapsefixture.Unsent)
	hs1, hs2, hs3 := synapsefixture.HS1, synapsefixture.HS2, synapsefixture.HS3
	want := map[string][]string{
		unsentR1: {hs1, hs2}, // the ban took hs3 out
		unsentR2: {hs1, hs2},
		unsentR3: {hs1, hs3},
		unsentR4: {hs1, hs2, hs3},
	}
	check := func(want map[string][]string) {
		t.Helper()
		got, err := synapse.RoomHosts(t.Context(), f.db, []string{unsentR1, unsentR2, unsentR3, unsentR4, "!unknown:example.org"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("hosts of %d rooms, want %d: %v", len(got), len(want), got)
		}
		for room, w := range want {
			if !slices.Equal(got[room], w) {
				t.Errorf("hosts in %s: %v, want %v", room, got[room], w)
			}
		}
	}
	check(want)

	// A room joined with partial state: the servers the join listed count
	// until Synapse has the full state.
	f.exec(t, `INSERT INTO partial_state_rooms (room_id) VALUES ($1)`, unsentR3)
	f.exec(t, `INSERT INTO partial_state_rooms_servers VALUES ($1, 'b.example'), ($1, $2)`, unsentR3, hs3)
	want[unsentR3] = []string{"b.example", hs1, hs3}
	check(want)
}
