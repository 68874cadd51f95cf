package synapse

import (
	"slices"
	"testing"
)

func TestRoutingFilter(t *testing.T) {
	for _, tc := range []struct {
		name      string
		whitelist []string
		hosts     []string
		want      []string
	}{
		{"ourselves never", nil, []string{"localhost:28481", "localhost:28482", "LOCALHOST:28481"}, []string{"localhost:28482"}},
		{"each once", nil, []string{"b.example", "a.example", "B.example"}, []string{"a.example", "b.example"}},
		{"whitelist", []string{"a.example"}, []string{"a.example", "b.example"}, []string{"a.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Routing{ServerName: "localhost:28481", Whitelist: tc.whitelist}.Filter(tc.hosts)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Filter(%q) = %q, want %q", tc.hosts, got, tc.want)
			}
		})
	}
}
