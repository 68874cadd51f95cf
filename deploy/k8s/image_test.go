package k8s_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestContainerImage: the Containerfile builds a static binary onto a base
// without a shell or C library, runs as the user the pods run as, and the
// build context leaves local state and keys out.
func TestContainerImage(t *testing.T) {
	file, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(file), -1)
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") {
		t.Errorf("the image's base is %q, want distroless static (CA certificates, no C library, no shell)", strings.SplitN(final, "\n", 2)[0])
	}
	if !regexp.MustCompile(`CGO_ENABLED=0 go build`).MatchString(string(file)) {
		t.Error("the binary is not built with CGO_ENABLED=0: it would need a C library the base lacks")
	}
	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindStringSubmatch(final)
	if user == nil {
		t.Fatal("the final stage has no numeric USER uid:gid (runAsNonRoot needs a numeric user)")
	}
	for name, m := range render(t) {
		for _, d := range of[*appsv1.Deployment](m) {
			sc := d.Spec.Template.Spec.SecurityContext
			if got := fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup); got != user[1]+":"+user[2] {
				t.Errorf("%s: the pods run as %s, the image as %s:%s", name, got, user[1], user[2])
			}
		}
	}

	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, want := range []string{"data/", "**/*.key", "**/*.creds", ".git"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %q: the build context would carry it into a layer", want)
		}
	}
}
