package ownership

import (
	"fmt"
	"testing"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("fedsender-%d", i)
	}
	return out
}

// TestOwnerBalances: 64 partitions over 3 replicas, each gets a fair share.
func TestOwnerBalances(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		count := map[string]int{}
		for p := range 64 {
			count[Owner(p, names(n))]++
		}
		for _, m := range names(n) {
			if c := count[m]; c < 64/n/2 || c > 64*2/n {
				t.Errorf("%d replicas: %s owns %d of 64 partitions: %v", n, m, c, count)
			}
		}
	}
}

// TestOwnerMovesOnlyTheChangedShare: a replica joining takes partitions
// only from the others, never moves a partition between two others;
// one leaving hands over only its own.
func TestOwnerMovesOnlyTheChangedShare(t *testing.T) {
	const partitions = 256
	for n := 1; n <= 6; n++ {
		before, after := names(n), names(n+1)
		joined := after[n]
		moved := 0
		for p := range partitions {
			a, b := Owner(p, before), Owner(p, after)
			if a != b {
				moved++
				if b != joined {
					t.Fatalf("%d->%d replicas: partition %d moved from %s to %s, not to the new %s", n, n+1, p, a, b, joined)
				}
			}
		}
		if moved == 0 || moved > 2*partitions/(n+1) {
			t.Errorf("%d->%d replicas: %d of %d partitions moved, want about %d", n, n+1, moved, partitions, partitions/(n+1))
		}
		// Removing a replica from the middle moves only its partitions.
		without := append(append([]string{}, after[:1]...), after[2:]...)
		for p := range partitions {
			if a, b := Owner(p, after), Owner(p, without); a != b && a != after[1] {
				t.Fatalf("removing %s moved partition %d from %s to %s", after[1], p, a, b)
			}
		}
	}
}

func TestKeys(t *testing.T) {
	if got := MemberKey("node1.example:2"); got != "member.node1_example=3A2" {
		t.Errorf("MemberKey = %q", got)
	}
	if p, ok := partitionOfKey(PartitionKey(63)); !ok || p != 63 {
		t.Errorf("partitionOfKey(PartitionKey(63)) = %d, %v", p, ok)
	}
	for _, k := range []string{"member.x", "partition.", "partition.-1", "partition.x", "synapse-feed"} {
		if _, ok := partitionOfKey(k); ok {
			t.Errorf("partitionOfKey(%q) accepted it", k)
		}
	}
}
