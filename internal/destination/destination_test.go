package destination

import "testing"

func TestFold(t *testing.T) {
	var s State
	s.Destination = "remote.example"
	steps := []struct {
		e    Event
		want State
	}{
		{Event{Type: Failed, At: 1000, Interval: 600000, Offset: 5},
			State{Offset: 5, FailureTS: 1000, RetryLastTS: 1000, RetryInterval: 600000}},
		{Event{Type: Failed, At: 2000, Interval: 1200000},
			State{Offset: 5, FailureTS: 1000, RetryLastTS: 2000, RetryInterval: 1200000}},
		{Event{Type: Failed, At: 3000, Interval: 4000000, CatchUp: true},
			State{Offset: 5, FailureTS: 1000, RetryLastTS: 3000, RetryInterval: 4000000, CatchingUp: true, CatchUpNewest: true}},
		{Event{Type: Reset, At: 3500},
			State{Offset: 5, CatchingUp: true, CatchUpNewest: true}},
		{Event{Type: CatchUpFinished, At: 4000, Offset: 9},
			State{Offset: 9}},
		{Event{Type: CatchUpStarted, At: 5000, Offset: 3, Reason: ReasonOverflow},
			State{Offset: 9, CatchingUp: true}},
		{Event{Type: Recovered, At: 6000, Offset: 12},
			State{Offset: 12, CatchingUp: true}},
		{Event{Type: CatchUpFinished, At: 7000},
			State{Offset: 12}},
		{Event{Type: CatchUpStarted, At: 8000, Reason: ReasonBackoff},
			State{Offset: 12, CatchingUp: true, CatchUpNewest: true}},
	}
	for i, st := range steps {
		rec := s.Record(st.e)
		st.want.Destination = "remote.example"
		if s != st.want || rec.State != st.want {
			t.Fatalf("step %d (%s): state %+v, recorded %+v, want %+v", i, st.e.Type, s, rec.State, st.want)
		}
	}
}
