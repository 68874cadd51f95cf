package synapse

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/fedsender/fedsender/internal/synapse/grants"
)

// docs/SYNAPSE.md gives operators the database role's grants to paste:
// they must be exactly those the tests run the feed with.
func TestDocsListTheGrants(t *testing.T) {
	doc, err := os.ReadFile("../../docs/SYNAPSE.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "GRANT ") && !strings.HasPrefix(line, "GRANT CONNECT ") {
			got = append(got, line)
		}
	}
	var want []string
	for _, s := range grants.Statements("public", "fedsender") {
		want = append(want, strings.ReplaceAll(s, `"`, "")+";")
	}
	if !slices.Equal(got, want) {
		t.Fatalf("docs/SYNAPSE.md grants:\n%s\nwant (internal/synapse/grants):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
