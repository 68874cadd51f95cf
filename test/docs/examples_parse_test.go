package docs_test

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseExamples(t *testing.T) {
	doc := strings.Join([]string{
		"# Title",
		"```sh",
		"echo plain",
		"```",
		"```json",
		`{"not": "an example"}`,
		"```",
		"```",
		"output, not an example",
		"```",
		"<!-- example: background; ready: up; shows: got it -->",
		"",
		"```bash",
		"serve",
		"```",
		"<!-- example: exit: 1; shows: a; shows: b -->",
		"````shell title",
		"fail",
		"```",
		"still inside",
		"````",
		"<!-- example: not run: needs a cluster -->",
		"```sh",
		"kubectl apply",
		"```",
	}, "\n")
	got, err := parseExamples("X.md", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []example{
		{file: "X.md", line: 2, script: "echo plain\n"},
		{file: "X.md", line: 13, script: "serve\n", background: true, ready: "up", shows: []string{"got it"}},
		{file: "X.md", line: 17, script: "fail\n```\nstill inside\n", exit: 1, shows: []string{"a", "b"}},
		{file: "X.md", line: 23, script: "kubectl apply\n", notRun: "needs a cluster"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("examples:\n got %+v\nwant %+v", got, want)
	}
}

// TestParseExamplesRefusesStrayAnnotations: an annotation that checks
// nothing must not pass unnoticed.
func TestParseExamplesRefusesStrayAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown directive", "<!-- example: shows: x; expect: y -->\n```sh\ntrue\n```", `unknown example directive "expect"`},
		{"before a json block", "<!-- example: shows: x -->\n```json\n{}\n```", `followed by a "json" block`},
		{"before text", "<!-- example: shows: x -->\nsome text\n```sh\ntrue\n```", "followed by text"},
		{"at the end", "```sh\ntrue\n```\n<!-- example: shows: x -->\n", "followed by no shell example"},
		{"not run without reason", "<!-- example: not run -->\n```sh\ntrue\n```", "needs a reason"},
		{"ready in the foreground", "<!-- example: ready: x -->\n```sh\ntrue\n```", "only for a background example"},
		{"bad exit", "<!-- example: exit: one -->\n```sh\ntrue\n```", "exit: want a number"},
		{"unclosed block", "```sh\ntrue\n", "not closed"},
		{"unterminated comment", "<!-- example: shows: x\n-->\n```sh\ntrue\n```", "must end with -->"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseExamples("X.md", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
