package k8s_test

import (
	"bytes"
	"os/exec"
	"testing"
)

// kubeScoreIgnored are kube-score's checks that fedsender's manifests do not
// follow, each with the reason; every other check, warnings included, must
// pass.
var kubeScoreIgnored = map[string][]struct{ flag, reason string }{
	"": {
		{"--ignore-container-cpu-limit", "no CPU limit: throttling would delay transactions; the CPU request reserves what a replica needs"},
		{"--ignore-test=deployment-has-host-podantiaffinity", "topologySpreadConstraints on kubernetes.io/hostname (DoNotSchedule) spread the replicas over the nodes, and still let a rolling update's surge pod start on a node that has one"},
	},
	"dev": {
		{"--ignore-test=deployment-strategy", "Recreate: the embedded NATS server's store on the volume is one process's; a surge pod would open it a second time"},
		{"--ignore-test=deployment-replicas", "one replica: the embedded NATS server is a single server"},
	},
}

// TestKubeScore runs kube-score (its own module in kube-score/, pinned
// there: its Kubernetes API version is older than the one these tests
// decode with) on every rendering, with warnings failing too.
func TestKubeScore(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles kube-score the first time")
	}
	for name, m := range render(t) {
		args := []string{"-C", "kube-score", "tool", "kube-score", "score", "--output-format", "ci", "--exit-one-on-warning"}
		for _, scope := range []string{"", name} {
			for _, ig := range kubeScoreIgnored[scope] {
				args = append(args, ig.flag)
			}
		}
		cmd := exec.Command("go", append(args, "-")...)
		cmd.Stdin = bytes.NewReader(m.yaml)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("kube-score on %s: %v\n%s", name, err, findings(out))
		}
	}
}

// findings is kube-score's output without the checks that passed or were
// skipped.
func findings(out []byte) []byte {
	var keep [][]byte
	for _, line := range bytes.Split(out, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("[OK]")) && !bytes.HasPrefix(line, []byte("[SKIPPED]")) {
			keep = append(keep, line)
		}
	}
	return bytes.Join(keep, []byte("\n"))
}
