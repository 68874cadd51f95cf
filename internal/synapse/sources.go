package synapse

import "fmt"

// eduSources are the constructors of the EDU sources, each a Source
// reading one of Synapse's EDU streams. A new EDU source is registered
// here, and nowhere else.
var eduSources = []func(EDUDeps) (Source, error){
	func(d EDUDeps) (Source, error) { return NewToDevice(d) },
	func(d EDUDeps) (Source, error) { return NewDeviceLists(d) },
	func(d EDUDeps) (Source, error) { return NewReceipts(d) },
	func(d EDUDeps) (Source, error) { return NewTyping(d) },
}

// Sources returns every source the feed runs against one Synapse: the
// events (PDUs) and the EDU sources.
func Sources(events EventsOptions, edus EDUDeps) ([]Source, error) {
	out := []Source{NewEvents(events)}
	for _, newSource := range eduSources {
		s, err := newSource(edus)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	names := map[string]bool{}
	for _, s := range out {
		if names[s.Name()] {
			return nil, fmt.Errorf("synapse: two sources named %s", s.Name())
		}
		names[s.Name()] = true
	}
	return out, nil
}
