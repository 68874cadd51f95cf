package ownership

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedsender/fedsender/internal/lease"
)

// PartitionOwner is one partition and the replica holding its lease.
type PartitionOwner struct {
	Partition int `json:"partition"`
	// Owner is the holder's instance_name; "" when no replica holds it.
	Owner string `json:"owner"`
	// Since is when the owner took it.
	Since *time.Time `json:"since,omitempty"`
}

// Owners reads the owner of every partition of n from the lease bucket.
func Owners(ctx context.Context, js jetstream.JetStream, n int) ([]PartitionOwner, error) {
	kv, err := js.KeyValue(ctx, lease.Bucket)
	if err != nil {
		return nil, fmt.Errorf("ownership: bucket %s: %w", lease.Bucket, err)
	}
	out := make([]PartitionOwner, n)
	for p := range out {
		out[p].Partition = p
	}
	w, err := kv.Watch(ctx, partitionPrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("ownership: read %s: %w", lease.Bucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return out, nil
			}
			p, ok := partitionOfKey(e.Key())
			if !ok || p >= n {
				continue
			}
			var r lease.Record
			if json.Unmarshal(e.Value(), &r) == nil {
				out[p].Owner = r.Holder
				since := r.Since
				out[p].Since = &since
			}
		}
	}
}

// holderOf is the holder named in a lease key's value ("?" when it is not
// a lease record).
func holderOf(e jetstream.KeyValueEntry) string {
	var r lease.Record
	if json.Unmarshal(e.Value(), &r) != nil || r.Holder == "" {
		return "?"
	}
	return r.Holder
}
