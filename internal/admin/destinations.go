package admin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
	"github.com/fedsender/fedsender/internal/servername"
)

// api is the four operations of Synapse's federation admin API, apart from
// any transport: the HTTP handler and the NATS micro service both call it,
// with the parameters as query values, so that both validate alike and
// answer the same JSON.
type api struct {
	opts Options
}

// destinationJSON is Synapse's destination object, fields in its order.
type destinationJSON struct {
	Destination   string `json:"destination"`
	RetryLastTS   int64  `json:"retry_last_ts"`
	RetryInterval int64  `json:"retry_interval"`
	// FailureTS is null when the destination is not failing.
	FailureTS *int64 `json:"failure_ts"`
	// LastSuccessfulStreamOrdering is null when nothing was ever sent.
	LastSuccessfulStreamOrdering *uint64 `json:"last_successful_stream_ordering"`
}

// view is what the API shows of a state (projection.Shown): when
// retry_last_ts is 0 the destination is not failing, and Synapse's details
// answer then shows failure_ts null and both retry fields 0. The list shows
// the same, so that both answers agree and sorting follows what is shown.
func view(s destination.State) destinationJSON {
	s = projection.Shown(s)
	d := destinationJSON{Destination: s.Destination, RetryLastTS: s.RetryLastTS, RetryInterval: s.RetryInterval}
	if s.FailureTS != 0 {
		d.FailureTS = &s.FailureTS
	}
	if s.Offset != 0 {
		d.LastSuccessfulStreamOrdering = &s.Offset
	}
	return d
}

type listJSON struct {
	Destinations []destinationJSON `json:"destinations"`
	Total        int               `json:"total"`
	NextToken    string            `json:"next_token,omitempty"`
}

// orderNames are the values of order_by, in Synapse's order.
var orderNames = func() []string {
	var out []string
	for _, o := range projection.Orders() {
		out = append(out, o.String())
	}
	return out
}()

// list is GET /destinations. Parameters are read in Synapse's order: from,
// limit, destination, order_by, dir.
func (a *api) list(ctx context.Context, q url.Values) (listJSON, error) {
	pg, err := pageParams(q)
	if err != nil {
		return listJSON{}, err
	}
	search, err := stringParam(q, "destination", "")
	if err != nil {
		return listJSON{}, err
	}
	orderBy, err := stringParam(q, "order_by", "destination", orderNames...)
	if err != nil {
		return listJSON{}, err
	}
	backwards, err := dirParam(q)
	if err != nil {
		return listJSON{}, err
	}
	rd, err := a.reader(ctx)
	if err != nil {
		return listJSON{}, err
	}
	order, _ := projection.ParseOrder(orderBy)
	page := rd.Page(projection.Query{Search: search, Order: order, Backwards: backwards, From: pg.from, Limit: pg.limit})
	if !rd.Ready() {
		// A read model that can fail (PostgreSQL) turns unready when a read
		// fails: answer 503, not the empty page it returned.
		return listJSON{}, ErrNotReady
	}
	ds := make([]destinationJSON, len(page.Destinations))
	for i, s := range page.Destinations {
		ds[i] = view(s)
	}
	return listJSON{Destinations: ds, Total: page.Total, NextToken: pg.next(page.Total)}, nil
}

// reader returns the read model once it is ready and shows every write
// that completed before the call.
func (a *api) reader(ctx context.Context) (Reader, error) {
	rd := a.opts.Reader
	if !rd.Ready() {
		return nil, ErrNotReady
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := rd.Sync(ctx); err != nil {
		a.opts.Log.Warn("admin: the read model could not catch up with its store", "error", err)
		return nil, withMessage(ErrNotReady, fmt.Sprintf(
			"The read model could not confirm that it shows the newest state (NATS unreachable, or the read model more than %v behind); try again", syncTimeout))
	}
	return rd, nil
}

// known returns the state of a named destination. A destination the read
// model does not have yet but the rooms index has seen PDUs for is known
// with nothing recorded (Synapse inserts its row when it queues the first
// PDU for it). A name is looked up as given, then in the form fedsender
// stores it under (servername.Normalize: "Matrix.ORG" finds "matrix.org");
// the state names the destination as stored.
func (a *api) known(ctx context.Context, name string) (destination.State, error) {
	if servername.Validate(name) != nil {
		return destination.State{}, ErrUnknownDestination // Synapse: not in its table, so 404
	}
	rd, err := a.reader(ctx)
	if err != nil {
		return destination.State{}, err
	}
	s, err := a.knownAs(rd, name)
	if errors.Is(err, ErrUnknownDestination) && servername.Normalize(name) != name {
		return a.knownAs(rd, servername.Normalize(name))
	}
	return s, err
}

func (a *api) knownAs(rd Reader, name string) (destination.State, error) {
	if s, ok := rd.Get(name); ok {
		return s, nil
	}
	if !rd.Ready() { // the read failed: 503, not 404
		return destination.State{}, ErrNotReady
	}
	if a.opts.Rooms != nil && a.opts.Rooms.Ready() {
		if _, ok := a.opts.Rooms.Rooms(name, projection.RoomQuery{}); ok {
			return destination.State{Destination: name}, nil
		}
	}
	return destination.State{}, ErrUnknownDestination
}

// show is GET /destinations/{destination}.
func (a *api) show(ctx context.Context, dest string) (destinationJSON, error) {
	s, err := a.known(ctx, dest)
	if err != nil {
		return destinationJSON{}, err
	}
	return view(s), nil
}

type roomsJSON struct {
	Rooms     []roomJSON `json:"rooms"`
	Total     int        `json:"total"`
	NextToken string     `json:"next_token,omitempty"`
}

type roomJSON struct {
	RoomID         string `json:"room_id"`
	StreamOrdering uint64 `json:"stream_ordering"`
}

// rooms is GET /destinations/{destination}/rooms: the rooms with PDUs for
// the destination, by room id, each with the stream ordering of its newest
// PDU. Like Synapse it checks the destination before its parameters, and
// ignores order_by (synapse-admin sends one).
func (a *api) rooms(ctx context.Context, dest string, q url.Values) (roomsJSON, error) {
	s, err := a.known(ctx, dest)
	if err != nil {
		return roomsJSON{}, err
	}
	dest = s.Destination
	pg, err := pageParams(q)
	if err != nil {
		return roomsJSON{}, err
	}
	backwards, err := dirParam(q)
	if err != nil {
		return roomsJSON{}, err
	}
	out := roomsJSON{Rooms: []roomJSON{}}
	if a.opts.Rooms == nil {
		out.NextToken = pg.next(0)
		return out, nil
	}
	if !a.opts.Rooms.Ready() {
		return roomsJSON{}, ErrNotReady
	}
	page, _ := a.opts.Rooms.Rooms(dest, projection.RoomQuery{Backwards: backwards, From: pg.from, Limit: pg.limit})
	if !a.opts.Rooms.Ready() { // the read failed: 503, not an empty page
		return roomsJSON{}, ErrNotReady
	}
	for _, r := range page.Rooms {
		out.Rooms = append(out.Rooms, roomJSON{RoomID: r.RoomID, StreamOrdering: r.StreamOrdering})
	}
	out.Total, out.NextToken = page.Total, pg.next(page.Total)
	return out, nil
}

// reset is POST /destinations/{destination}/reset_connection. Like
// Synapse, which writes before it answers, it answers 200 only once the
// reset is visible to every read that starts afterwards, on any replica:
// the owner clears the timings (a Reset event), wakes the destination, and
// answers once the event is stored, with its event-log sequence; the reset
// then waits until its read model shows the destination as of that
// sequence. The read model's store is shared and every read syncs with it
// first, so every later read shows it too.
func (a *api) reset(ctx context.Context, dest string) error {
	s, err := a.known(ctx, dest)
	if err != nil {
		return err
	}
	if !s.Failing() {
		return ErrResetNotNeeded
	}
	dest = s.Destination
	if a.opts.Resetter == nil {
		return fmt.Errorf("admin: reset %s: no resetter configured", dest)
	}
	octx, cancel := context.WithTimeout(ctx, resetTimeout)
	seq, err := a.opts.Resetter.Reset(octx, dest)
	cancel()
	switch {
	case errors.Is(err, destination.ErrNotFailing):
		// The owner knows better than a read model that may lag.
		return ErrResetNotNeeded
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		a.opts.Log.Warn("admin reset: the owner did not confirm it", "destination", dest, "error", err)
		return withMessage(ErrTimeout, fmt.Sprintf("The destination's owner did not confirm the reset within %v", resetTimeout))
	case err != nil:
		return fmt.Errorf("admin: reset %s: %w", dest, err)
	}
	if err := a.awaitShown(ctx, dest, seq); err != nil {
		return err
	}
	a.opts.Log.Info("admin reset of retry timings done", "destination", dest, "event_sequence", seq)
	return nil
}

// awaitShown waits until the read model shows dest as of event-log
// sequence seq or later.
func (a *api) awaitShown(ctx context.Context, dest string, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, shownTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := a.opts.Reader.EventSeq(ctx, dest)
		if err == nil && got >= seq {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			a.opts.Log.Warn("admin reset: the read model did not show it", "destination", dest,
				"event_sequence", seq, "shown", got, "error", err)
			return withMessage(ErrTimeout, fmt.Sprintf(
				"The retry timings were reset (event %d), but the read model did not show it within %v; it will show it once it catches up", seq, shownTimeout))
		}
	}
}
