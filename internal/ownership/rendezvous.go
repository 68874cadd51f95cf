package ownership

import (
	"hash/fnv"
	"strconv"

	"github.com/fedsender/fedsender/streams"
)

// Key prefixes in the lease bucket.
const (
	memberPrefix    = "member."
	partitionPrefix = "partition."
)

// MemberKey is the lease key of a replica's membership.
func MemberKey(instance string) string { return memberPrefix + streams.EncodeToken(instance) }

// PartitionKey is the lease key of partition p's ownership.
func PartitionKey(p int) string { return partitionPrefix + strconv.Itoa(p) }

// partitionOfKey returns the partition of a PartitionKey, and false for
// any other key.
func partitionOfKey(key string) (int, bool) {
	if len(key) <= len(partitionPrefix) || key[:len(partitionPrefix)] != partitionPrefix {
		return 0, false
	}
	p, err := strconv.Atoi(key[len(partitionPrefix):])
	return p, err == nil && p >= 0
}

// Owner returns the desired owner of partition p among members: the one
// with the highest rendezvous weight (ties, which need a 64-bit hash
// collision, go to the smaller name). "" when there are no members.
func Owner(p int, members []string) string {
	best, bestW := "", uint64(0)
	for _, m := range members {
		w := weight(m, p)
		if best == "" || w > bestW || (w == bestW && m < best) {
			best, bestW = m, w
		}
	}
	return best
}

// Desired returns the partitions (of n) whose desired owner among members
// is self, in increasing order.
func Desired(self string, members []string, n int) []int {
	var out []int
	for p := range n {
		if Owner(p, members) == self {
			out = append(out, p)
		}
	}
	return out
}

// weight is member's rendezvous weight for partition p: FNV-1a of the
// name, mixed with the partition by splitmix64's finaliser, so that close
// names (fedsender-0, fedsender-1) get independent weights.
func weight(member string, p int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	x := h.Sum64() ^ (uint64(p)+1)*0x9E3779B97F4A7C15
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return x
}
