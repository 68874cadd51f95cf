package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket names, and the subjects a homeserver and operators use.
const (
	PDUStream        = "FEDSENDER_PDU"
	PDUSubject       = "fedsender.pdu"
	DeadLetterStream = "FEDSENDER_DEADLETTER"
	DeadLetterPDU    = "fedsender.deadletter.pdu"
	EDUStream        = "FEDSENDER_EDU"
	EDUSubject       = "fedsender.edu"
	DeadLetterEDU    = "fedsender.deadletter.edu"
	// ServerUpSubject (core NATS) carries {"destination": "server"} when
	// the homeserver saw an authenticated request from that server.
	ServerUpSubject  = "fedsender.server_up"
	EventStream      = "FEDSENDER_DEST_EVENTS"
	OffsetBucket     = "fedsender-offsets"
	EDUOffsetBucket  = "fedsender-edu-offsets"
	DeviceListBucket = "fedsender-device-lists"
	PartitionBucket  = "fedsender-partitions"
	// EDUPendingBucket holds, per destination, how many must-deliver EDUs
	// its actor holds unacknowledged (decimal, key <partition>.<token>):
	// what the read models show as pending_edus.
	EDUPendingBucket = "fedsender-edu-pending"
	// LeaseBucket holds leases (internal/lease): partition ownership,
	// replica membership and the Synapse feed's single reader, each a key
	// with a per-key TTL.
	LeaseBucket = "fedsender-leases"
	// SynapsePositionBucket holds the Synapse feed's position in each of
	// Synapse's streams, key the source's name.
	SynapsePositionBucket = "fedsender-synapse-positions"
	// SynapseBooksBucket holds how far the Synapse bookkeeping
	// (internal/synapse/books) applied each stream to Synapse's tables.
	SynapseBooksBucket = "fedsender-synapse-books"

	// HeaderReason carries a dead letter's reason.
	HeaderReason = "Fedsender-Reason"
	// HeaderSourceSeq carries the PDU stream sequence a dead letter came from.
	HeaderSourceSeq = "Fedsender-Source-Seq"
	// HeaderDestination names, quoted, the one destination a dead letter
	// refused; absent when the whole envelope was refused.
	HeaderDestination = "Fedsender-Destination"
	// HeaderDestinationIndex is that destination's index in the envelope's
	// destinations.
	HeaderDestinationIndex = "Fedsender-Destination-Index"

	// EventHistory is how many events each destination keeps in its log.
	EventHistory = 100
)

// Options size the streams.
type Options struct {
	Replicas  int           // 1, 3 or 5
	Retention time.Duration // how long PDUs are kept (catch-up reads them)
	// DuplicateWindow is how long a PDU's event id deduplicates a republish.
	DuplicateWindow time.Duration
}

func (o *Options) setDefaults() {
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Retention == 0 {
		o.Retention = 14 * 24 * time.Hour
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = 10 * time.Minute
	}
}

// StreamConfigs returns the configuration of every stream fedsender uses.
func StreamConfigs(o Options) []jetstream.StreamConfig {
	o.setDefaults()
	return []jetstream.StreamConfig{{
		Name:        PDUStream,
		Description: "PDUs to deliver: one message per PDU, with its destinations",
		Subjects:    []string{PDUSubject},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.DuplicateWindow,
		AllowDirect: true,
	}, {
		Name:        EDUStream,
		Description: "EDUs to deliver: one message per EDU, with its destinations",
		Subjects:    []string{EDUSubject},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.DuplicateWindow,
		AllowDirect: true,
	}, {
		Name:        DeadLetterStream,
		Description: "Envelopes fedsender refused, with the reason in the Fedsender-Reason header",
		Subjects:    []string{"fedsender.deadletter.>"},
		MaxAge:      30 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  time.Hour,
	}, {
		Name:              EventStream,
		Description:       "Each destination's event log; every event carries the state after it",
		Subjects:          []string{"fedsender.events.*.*"},
		MaxMsgsPerSubject: EventHistory,
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		AllowDirect:       true,
	}}
}

// KVConfigs returns the configuration of every KV bucket fedsender uses.
func KVConfigs(o Options) []jetstream.KeyValueConfig {
	o.setDefaults()
	return []jetstream.KeyValueConfig{{
		Bucket:      OffsetBucket,
		Description: "last_successful_stream_ordering per destination, key <partition>.<destination token>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:      EDUOffsetBucket,
		Description: "per destination, the " + EDUStream + " sequence below which every must-deliver EDU was acknowledged, key <partition>.<destination token>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:      EDUPendingBucket,
		Description: "per destination, the must-deliver EDUs held unacknowledged (decimal), key <partition>.<destination token>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:      DeviceListBucket,
		Description: "the device-list chain: per destination and user, the newest stream_id delivered, key <destination token>.<user token>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:      PartitionBucket,
		Description: "each partition's resume watermark in " + PDUStream,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:         LeaseBucket,
		Description:    "leases: partition ownership, replica membership and the Synapse feed's single reader; per-key TTL",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
		LimitMarkerTTL: time.Minute,
	}, {
		Bucket:      SynapsePositionBucket,
		Description: "the Synapse feed's position in each of Synapse's streams, key the source (events, to_device, ...)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, {
		Bucket:      SynapseBooksBucket,
		Description: "the Synapse bookkeeping's checkpoints: the sequence of each stream applied to Synapse's tables",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}, destinationBucketConfig(o)}
}

// Ensure creates or updates every stream and KV bucket.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range StreamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("streams: ensure stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range KVConfigs(o) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("streams: ensure bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// EventSubject is the subject of a destination's event log.
func EventSubject(partition int, destination string) string {
	return "fedsender.events." + strconv.Itoa(partition) + "." + EncodeToken(destination)
}

// EventFilter matches the event logs of every destination of one partition.
func EventFilter(partition int) string {
	return "fedsender.events." + strconv.Itoa(partition) + ".*"
}

// OffsetKey is a destination's key in the offsets bucket.
func OffsetKey(partition int, destination string) string {
	return strconv.Itoa(partition) + "." + EncodeToken(destination)
}

// OffsetFilter matches the offset keys of one partition.
func OffsetFilter(partition int) string {
	return strconv.Itoa(partition) + ".*"
}

// PartitionKey is a partition's key in the partitions bucket.
func PartitionKey(partition int) string {
	return "p" + strconv.Itoa(partition)
}

// ErrBadSubject is returned for subjects and keys fedsender did not build.
var ErrBadSubject = errors.New("streams: not a fedsender subject")

// DestinationFromEventSubject returns the destination whose log a subject is.
func DestinationFromEventSubject(subject string) (string, error) {
	const prefix = "fedsender.events."
	if len(subject) <= len(prefix) || subject[:len(prefix)] != prefix {
		return "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	rest := subject[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			return DecodeToken(rest[i+1:])
		}
	}
	return "", fmt.Errorf("%w: %q", ErrBadSubject, subject)
}

// DestinationFromOffsetKey returns the destination of an offsets-bucket key.
func DestinationFromOffsetKey(key string) (string, error) {
	for i := 0; i < len(key); i++ {
		if key[i] == '.' {
			return DecodeToken(key[i+1:])
		}
	}
	return "", fmt.Errorf("%w: %q", ErrBadSubject, key)
}

// DeviceListKey is a (destination, user)'s key in the device-list bucket.
func DeviceListKey(destination, user string) string {
	return EncodeToken(destination) + "." + EncodeToken(user)
}
