package streams

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// The admin surfaces' names: the KV read model of every destination, the
// NATS micro service operators call, and the core-NATS command subjects the
// owner of each partition listens on.
const (
	// DestinationBucket holds one JSON document per destination (Synapse's
	// destination object plus catching_up and event_sequence), under the key
	// DestinationKey(name). It is a projection of EventStream and
	// OffsetBucket, rebuildable at any time (see kvprojection).
	DestinationBucket = "fedsender-destinations"

	// AdminService is the NATS micro service's name (nats micro info fedsender).
	AdminService = "fedsender"
	// AdminSubjectPrefix is the group of the micro service's endpoints:
	// AdminSubjectPrefix + ".list", ".show", ".rooms", ".reset".
	AdminSubjectPrefix = "fedsender.admin.destinations"

	controlPrefix = "fedsender.control."
)

// destinationBucketConfig is DestinationBucket's configuration.
func destinationBucketConfig(o Options) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      DestinationBucket,
		Description: "read model: one JSON document per destination, key = server-name token; rebuilt from " + EventStream,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// DestinationBucketConfig returns DestinationBucket's configuration, so that
// a projector can recreate the bucket after an operator deleted it.
func DestinationBucketConfig(o Options) jetstream.KeyValueConfig {
	o.setDefaults()
	return destinationBucketConfig(o)
}

// DestinationKey is a destination's key in DestinationBucket: its token
// (EncodeToken), with no partition, so `nats kv get fedsender-destinations
// matrix_org` finds matrix.org without knowing the partition count.
func DestinationKey(destination string) string {
	return EncodeToken(destination)
}

// DestinationFromKey reverses DestinationKey.
func DestinationFromKey(key string) (string, error) {
	return DecodeToken(key)
}

// AdminSubject is the subject of one of the micro service's endpoints.
func AdminSubject(endpoint string) string {
	return AdminSubjectPrefix + "." + endpoint
}

// ControlResetSubject is the core-NATS subject on which the owner of a
// partition takes reset commands. Only the partition number is in the
// subject; the destination travels in the body, so no server name can
// reach a subject it was not meant for.
func ControlResetSubject(partition int) string {
	return controlPrefix + strconv.Itoa(partition) + ".reset"
}

// PartitionFromControlSubject returns the partition of a ControlResetSubject.
func PartitionFromControlSubject(subject string) (int, error) {
	rest, ok := strings.CutPrefix(subject, controlPrefix)
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	num, ok := strings.CutSuffix(rest, ".reset")
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	p, err := strconv.Atoi(num)
	if err != nil || p < 0 || strconv.Itoa(p) != num {
		return 0, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	return p, nil
}
