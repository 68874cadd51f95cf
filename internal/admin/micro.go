package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedsender/fedsender/streams"
)

// MicroVersion is the micro service's version (semver, as micro requires).
const MicroVersion = "1.0.0"

// The micro service's endpoints, each with the HTTP call it mirrors, an
// example request, and the keys its JSON request takes.
var microEndpoints = []struct {
	name, mirror, example string
	keys                  []string
}{
	{"list", "GET /_synapse/admin/v1/federation/destinations",
		`{"from":0,"limit":100,"destination":"<search>","order_by":"destination","dir":"f"} (every key optional)`,
		[]string{"from", "limit", "destination", "order_by", "dir"}},
	{"show", "GET /_synapse/admin/v1/federation/destinations/<destination>",
		`{"destination":"<server name>"}`,
		[]string{"destination"}},
	{"rooms", "GET /_synapse/admin/v1/federation/destinations/<destination>/rooms",
		`{"destination":"<server name>","from":0,"limit":100,"dir":"f"} (destination required)`,
		[]string{"destination", "from", "limit", "dir", "order_by"}},
	{"reset", "POST /_synapse/admin/v1/federation/destinations/<destination>/reset_connection",
		`{"destination":"<server name>"}`,
		[]string{"destination"}},
}

// ServeMicro runs the NATS micro service streams.AdminService on nc until
// ctx ends, then stops it and returns nil. Its endpoints,
// streams.AdminSubject("list"), "show", "rooms" and "reset", take a JSON
// object of the HTTP API's parameters (the destination's name as
// "destination") and answer the HTTP API's JSON; an error is a micro error
// whose code is the HTTP status, whose description is the message, and
// whose body is the HTTP API's error body. Every replica serves it in the
// default queue group, so any of them answers; resets go to the owner
// through opts.Resetter. The bearer tokens do not apply here: NATS
// permissions on fedsender.admin.> guard it.
func ServeMicro(ctx context.Context, nc *nats.Conn, opts Options) error {
	opts.setDefaults()
	a := &api{opts: opts}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        streams.AdminService,
		Version:     MicroVersion,
		Description: "fedsender admin: Synapse's federation destinations API (list, show, rooms, reset) over NATS",
	})
	if err != nil {
		return fmt.Errorf("admin: micro service: %w", err)
	}
	defer svc.Stop()
	g := svc.AddGroup(streams.AdminSubjectPrefix)
	for _, ep := range microEndpoints {
		h := a.microHandler(ctx, ep.name, ep.keys)
		if err := g.AddEndpoint(ep.name, h, micro.WithEndpointMetadata(map[string]string{
			"mirrors": ep.mirror,
			"request": ep.example,
		})); err != nil {
			return fmt.Errorf("admin: micro endpoint %s: %w", ep.name, err)
		}
	}
	if err := a.addPartitionsEndpoint(ctx, svc); err != nil {
		return fmt.Errorf("admin: micro endpoint partitions: %w", err)
	}
	<-ctx.Done()
	return nil
}

// microHandler answers one endpoint.
func (a *api) microHandler(ctx context.Context, name string, keys []string) micro.HandlerFunc {
	return func(req micro.Request) {
		out, err := a.microCall(ctx, name, keys, req.Data())
		if err != nil {
			a.microError(req, name, err)
			return
		}
		req.RespondJSON(out)
	}
}

// microError answers err as the error table has it.
func (a *api) microError(req micro.Request, name string, err error) {
	status, body, known := answer(err)
	if !known {
		a.opts.Log.Error("admin micro request failed", "endpoint", name, "error", err)
	}
	data, _ := json.Marshal(body) // a plain struct
	req.Error(strconv.Itoa(status), body.Error, data)
}

// microCall decodes a request and runs the operation.
func (a *api) microCall(ctx context.Context, name string, keys []string, data []byte) (any, error) {
	q, err := jsonParams(data, keys...)
	if err != nil {
		return nil, err
	}
	if name == "list" {
		return a.list(ctx, q)
	}
	dest, err := requiredName(q)
	if err != nil {
		return nil, err
	}
	switch name {
	case "show":
		return a.show(ctx, dest)
	case "rooms":
		return a.rooms(ctx, dest, q)
	default: // reset
		if err := a.reset(ctx, dest); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}
