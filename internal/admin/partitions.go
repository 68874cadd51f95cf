package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/fedsender/fedsender/internal/ownership"
)

// Owners reads which replica owns each partition (the lease bucket, which
// every replica reads alike).
type Owners interface {
	Owners(ctx context.Context) ([]ownership.PartitionOwner, error)
}

// PartitionsPath is the HTTP path of the partitions' owners.
const PartitionsPath = "/_fedsender/partitions"

// PartitionsSubject is the micro endpoint of the partitions' owners.
const PartitionsSubject = "fedsender.admin.partitions"

// partitionsTimeout bounds the read of the lease bucket (503 past it).
const partitionsTimeout = 5 * time.Second

// partitionsAnswer is the answer of both surfaces.
type partitionsAnswer struct {
	Partitions []ownership.PartitionOwner `json:"partitions"`
	// Unowned counts the partitions no replica holds: none sends for
	// their destinations until one does.
	Unowned int `json:"unowned"`
}

var epPartitions = endpoint{http.MethodGet, true, (*handler).httpPartitions}

func (a *api) partitions(ctx context.Context) (partitionsAnswer, error) {
	if a.opts.Owners == nil {
		return partitionsAnswer{}, errUnrecognized
	}
	ctx, cancel := context.WithTimeout(ctx, partitionsTimeout)
	defer cancel()
	list, err := a.opts.Owners.Owners(ctx)
	if err != nil {
		return partitionsAnswer{}, withMessage(ErrNotReady, fmt.Sprintf("cannot read the partitions' owners: %v", err))
	}
	out := partitionsAnswer{Partitions: list}
	for _, o := range list {
		if o.Owner == "" {
			out.Unowned++
		}
	}
	return out, nil
}

// httpPartitions is GET /_fedsender/partitions.
func (h *handler) httpPartitions(w http.ResponseWriter, r *http.Request, _ string) error {
	out, err := h.partitions(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// addPartitionsEndpoint adds PartitionsSubject to the micro service.
func (a *api) addPartitionsEndpoint(ctx context.Context, svc micro.Service) error {
	if a.opts.Owners == nil {
		return nil
	}
	return svc.AddEndpoint("partitions", micro.HandlerFunc(func(req micro.Request) {
		out, err := a.partitions(ctx)
		if err != nil {
			a.microError(req, "partitions", err)
			return
		}
		req.RespondJSON(out)
	}), micro.WithEndpointSubject(PartitionsSubject), micro.WithEndpointMetadata(map[string]string{
		"mirrors": "GET " + PartitionsPath,
		"request": "{} (no parameters)",
	}))
}
