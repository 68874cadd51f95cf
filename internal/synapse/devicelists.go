package synapse

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// DeviceLists is the device-list source: the pokes Synapse wrote to
// device_lists_outbound_pokes (one row per destination per change of a
// local user's device or cross-signing key) that are not marked sent,
// turned into EDUs as Synapse's get_device_updates_by_remote does, per
// destination:
//
//   - one m.device_list_update per (user, device), for the highest stream
//     id of its pokes in the batch, with the device's keys and their
//     cross-signing signatures, deleted: true once the device is gone, and
//     device_display_name only when ShareDeviceNames is set;
//   - pokes whose "device id" is the user's current master or
//     self-signing public key become one m.signing_key_update with those
//     keys, and an identical org.matrix.signing_key_update;
//   - prev_id chains a user's updates to that destination: the first of a
//     batch names the last stream id the destination had of the user (from
//     device_lists_outbound_last_success, which the bookkeeping moves after
//     a 200, or a poke this source already published), the next ones the
//     update before them in the batch.
//
// Each envelope carries HeaderSource "device_list <stream_id>" and a
// Nats-Msg-Id made of the destination and stream id, so a replay sends
// nothing twice and the bookkeeping can mark the pokes sent after the
// destination's 200.
//
// Pokes are read up to a position every poke below is committed at: in
// Synapse 1.92 the device-list stream has a single writer and no
// stream_positions row, so that position is the newest device_lists token
// seen on replication (Observe), or, when replication said nothing yet,
// the newest poke older than a few seconds (Synapse allocates a poke's id
// and timestamp just before the transaction that writes it). A Synapse
// with several device-list writers has stream_positions rows, and their
// minimum is used.
//
// A first start reads from 0: every poke not marked sent is owed, as it is
// to Synapse's own sender.
type DeviceLists struct {
	d EDUDeps

	mu         sync.Mutex
	replicated int64 // newest device_lists token seen on replication
}

// pokeSettle is how old the newest poke must be to be read when
// replication has not told the stream's position.
const pokeSettle = 5 * time.Second

// NewDeviceLists returns the device-list source.
func NewDeviceLists(deps EDUDeps) (*DeviceLists, error) {
	d, err := deps.withDefaults()
	if err != nil {
		return nil, err
	}
	return &DeviceLists{d: d}, nil
}

// Name implements Source.
func (*DeviceLists) Name() string { return "device_lists" }

// Streams implements Source.
func (*DeviceLists) Streams() []string { return []string{"device_lists"} }

// Start implements Source: every poke not marked sent.
func (*DeviceLists) Start(context.Context) (int64, error) { return 0, nil }

// Observe implements RowObserver: a device_lists row's token is a position
// the stream's writer has persisted everything up to.
func (s *DeviceLists) Observe(stream string, token int64, _ json.RawMessage) {
	if stream != "device_lists" {
		return
	}
	s.mu.Lock()
	s.replicated = max(s.replicated, token)
	s.mu.Unlock()
}

// ObserveWriter takes the device_lists position of Synapse's POSITION
// commands (each writer announces its own when a process connects to
// replication) as Observe takes a row's token.
func (s *DeviceLists) ObserveWriter(stream, _ string, token int64) { s.Observe(stream, token, nil) }

// upto is the position pokes are read up to.
func (s *DeviceLists) upto(ctx context.Context) (int64, error) {
	if pos, ok, err := streamPosition(ctx, s.d.DB, "device_lists_stream"); err != nil || ok {
		return pos, err
	}
	s.mu.Lock()
	replicated := s.replicated
	s.mu.Unlock()
	var settled int64
	err := s.d.DB.QueryRow(ctx, `SELECT coalesce(max(stream_id), 0) FROM device_lists_outbound_pokes WHERE ts <= $1`,
		s.d.Now().Add(-pokeSettle).UnixMilli()).Scan(&settled)
	if err != nil {
		return 0, fmt.Errorf("synapse: newest device-list poke: %w", err)
	}
	return max(replicated, settled), nil
}

// poke is one row of device_lists_outbound_pokes.
type poke struct {
	dest, user, device string
	streamID           int64
	context            *string
}

// Next implements Source.
func (s *DeviceLists) Next(ctx context.Context, from int64) (Batch, error) {
	upto, err := s.upto(ctx)
	if err != nil {
		return Batch{}, err
	}
	if upto <= from {
		return Batch{Position: from}, nil
	}
	pokes, ids, last, err := s.read(ctx, from, upto)
	if err != nil {
		return Batch{}, err
	}
	msgs, err := s.envelopes(ctx, from, pokes)
	if err != nil {
		return Batch{}, err
	}
	if ids == s.d.BatchSize {
		return Batch{Messages: msgs, Position: last, More: last < upto}, nil
	}
	return Batch{Messages: msgs, Position: upto}, nil
}

// read returns the unsent pokes of whole stream ids after from, at most
// BatchSize ids, for the destinations Routing allows, in stream order.
func (s *DeviceLists) read(ctx context.Context, from, upto int64) (pokes []poke, ids int, last int64, err error) {
	rows, err := s.d.DB.Query(ctx, `
		WITH ids AS (
			SELECT DISTINCT stream_id FROM device_lists_outbound_pokes
			 WHERE NOT sent AND stream_id > $1 AND stream_id <= $2 ORDER BY stream_id LIMIT $3)
		SELECT p.destination, p.stream_id, p.user_id, p.device_id, p.opentracing_context
		  FROM device_lists_outbound_pokes p JOIN ids USING (stream_id)
		 WHERE NOT p.sent ORDER BY p.stream_id, p.destination`, from, upto, s.d.BatchSize)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("synapse: read device_lists_outbound_pokes after %d: %w", from, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p poke
		if err := rows.Scan(&p.dest, &p.streamID, &p.user, &p.device, &p.context); err != nil {
			return nil, 0, 0, fmt.Errorf("synapse: read device_lists_outbound_pokes: %w", err)
		}
		if p.streamID != last {
			ids, last = ids+1, p.streamID
		}
		dests := s.d.Routing.Filter([]string{p.dest})
		if len(dests) == 0 {
			continue
		}
		p.dest = dests[0]
		pokes = append(pokes, p)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, 0, fmt.Errorf("synapse: read device_lists_outbound_pokes: %w", err)
	}
	return pokes, ids, last, nil
}

// update is one EDU of a destination's batch: a device's update, or a
// user's cross-signing keys.
type update struct {
	user, device string // device "" for cross-signing keys
	streamID     int64
	context      *string
	master, ss   bool // which cross-signing keys changed
}

// envelopes turns a batch of pokes into the EDUs of each destination.
func (s *DeviceLists) envelopes(ctx context.Context, from int64, pokes []poke) ([]*nats.Msg, error) {
	if len(pokes) == 0 {
		return nil, nil
	}
	var users, dests []string
	for _, p := range pokes {
		users, dests = append(users, p.user), append(dests, p.dest)
	}
	slices.Sort(users)
	slices.Sort(dests)
	users, dests = slices.Compact(users), slices.Compact(dests)
	cross, err := s.crossSigningKeys(ctx, users)
	if err != nil {
		return nil, err
	}
	perDest := map[string][]*update{}
	index := map[[3]string]*update{} // (destination, user, device; "" for cross-signing keys)
	var devices [][2]string
	seen := map[[2]string]bool{}
	for _, p := range pokes {
		keys := cross[p.user]
		isMaster, isSS := p.device == keys.masterPub, p.device == keys.selfSigningPub
		key := [3]string{p.dest, p.user, p.device}
		if isMaster || isSS {
			key[2] = ""
		}
		u := index[key]
		if u == nil {
			u = &update{user: key[1], device: key[2]}
			index[key] = u
			perDest[p.dest] = append(perDest[p.dest], u)
			if d := [2]string{p.user, p.device}; u.device != "" && !seen[d] {
				seen[d] = true
				devices = append(devices, d)
			}
		}
		u.streamID, u.context = p.streamID, p.context
		u.master, u.ss = u.master || isMaster, u.ss || isSS
	}
	info, err := s.devices(ctx, devices)
	if err != nil {
		return nil, err
	}
	prev, err := s.lastSent(ctx, from, dests, users)
	if err != nil {
		return nil, err
	}
	var msgs []*nats.Msg
	order := make([]string, 0, len(perDest))
	for dest := range perDest {
		order = append(order, dest)
	}
	slices.Sort(order)
	for _, dest := range order {
		ups := perDest[dest]
		slices.SortFunc(ups, func(a, b *update) int { return cmp.Compare(a.streamID, b.streamID) })
		for _, u := range ups {
			var m []*nats.Msg
			if u.device == "" {
				m, err = s.signingKeyUpdate(ctx, dest, u, cross[u.user])
			} else {
				key := [2]string{dest, u.user}
				m, err = s.deviceListUpdate(ctx, dest, u, prev[key], info[[2]string{u.user, u.device}])
				prev[key] = u.streamID
			}
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, m...)
		}
	}
	return msgs, nil
}

// lastSent returns, per (destination, user), the newest device-list
// stream id the destination has or will have of the user before this
// batch: the bookkeeping's device_lists_outbound_last_success, or a poke
// at or before from (published by an earlier batch).
func (s *DeviceLists) lastSent(ctx context.Context, from int64, dests, users []string) (map[[2]string]int64, error) {
	rows, err := s.d.DB.Query(ctx, `
		SELECT destination, user_id, max(stream_id) FROM (
			SELECT destination, user_id, stream_id FROM device_lists_outbound_last_success
			 WHERE destination = ANY($1) AND user_id = ANY($2)
			UNION ALL
			SELECT destination, user_id, stream_id FROM device_lists_outbound_pokes
			 WHERE destination = ANY($1) AND user_id = ANY($2) AND stream_id <= $3) AS sent
		 GROUP BY destination, user_id`, dests, users, from)
	if err != nil {
		return nil, fmt.Errorf("synapse: device lists last sent: %w", err)
	}
	defer rows.Close()
	out := map[[2]string]int64{}
	for rows.Next() {
		var dest, user string
		var id int64
		if err := rows.Scan(&dest, &user, &id); err != nil {
			return nil, fmt.Errorf("synapse: device lists last sent: %w", err)
		}
		out[[2]string{dest, user}] = id
	}
	return out, rows.Err()
}

// deviceListUpdate builds one m.device_list_update.
func (s *DeviceLists) deviceListUpdate(ctx context.Context, dest string, u *update, prev int64, dev *deviceInfo) ([]*nats.Msg, error) {
	content := map[string]any{
		"user_id":   u.user,
		"device_id": u.device,
		"stream_id": u.streamID,
		"prev_id":   []int64{},
	}
	if prev > 0 {
		content["prev_id"] = []int64{prev}
	}
	if u.context != nil && *u.context != "{}" && *u.context != "" {
		content["org.matrix.opentracing_context"] = *u.context
	}
	switch {
	case dev == nil:
		content["deleted"] = true
	default:
		if dev.keys != nil {
			content["keys"] = dev.keys
		}
		if s.d.ShareDeviceNames && dev.name != "" {
			content["device_display_name"] = dev.name
		}
	}
	id := strconv.FormatInt(u.streamID, 10)
	m, err := s.d.message(ctx, outgoing{Type: "m.device_list_update", Content: content, Destinations: []string{dest},
		ID: "synapse-dl-" + dest + "-" + id, Source: "device_list " + id})
	if err != nil {
		return nil, err
	}
	return []*nats.Msg{m}, nil
}

// signingKeyUpdate builds the m.signing_key_update of a user's changed
// cross-signing keys and its org.matrix twin, which Synapse still sends.
func (s *DeviceLists) signingKeyUpdate(ctx context.Context, dest string, u *update, keys crossSigning) ([]*nats.Msg, error) {
	content := map[string]any{"user_id": u.user}
	if u.master {
		content["master_key"] = keys.master
	}
	if u.ss {
		content["self_signing_key"] = keys.selfSigning
	}
	id := strconv.FormatInt(u.streamID, 10)
	var msgs []*nats.Msg
	for _, t := range []struct{ typ, prefix string }{
		{"m.signing_key_update", "synapse-sk-"},
		{"org.matrix.signing_key_update", "synapse-osk-"},
	} {
		m, err := s.d.message(ctx, outgoing{Type: t.typ, Content: content, Destinations: []string{dest},
			ID: t.prefix + dest + "-" + id, Source: "device_list " + id})
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}
