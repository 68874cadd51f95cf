package synapse

import "fmt"

// Sources returns every source the feed runs against one Synapse: the
// events (PDUs) and the EDU sources (NewEDUSources, where a new EDU source
// is registered).
func Sources(events EventsOptions, edus EDUDeps) ([]Source, error) {
	eduSources, err := NewEDUSources(edus)
	if err != nil {
		return nil, err
	}
	out := append([]Source{NewEvents(events)}, eduSources...)
	names := map[string]bool{}
	for _, s := range out {
		if names[s.Name()] {
			return nil, fmt.Errorf("synapse: two sources named %s", s.Name())
		}
		names[s.Name()] = true
	}
	return out, nil
}
