package edu

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"slices"
)

// chainHistory is how many deliveries of one user's device list a chain
// remembers: enough to rebuild, after a restart, the prev_id of updates
// sent again because a to-device message before them was still pending.
const chainHistory = 64

// Link is one m.device_list_update delivered to a destination: the EDU
// stream sequence that carried it, its stream_id and the prev_id it had.
type Link struct {
	Seq      uint64  `json:"seq"`
	StreamID int64   `json:"stream_id"`
	PrevID   []int64 `json:"prev_id"`
}

// Chain is what a destination was sent of one user's device list: its
// newest deliveries, oldest first.
type Chain struct {
	Links []Link `json:"links"`
}

// prevFor is the prev_id of the update carried by seq: what that EDU had
// when it was delivered before, else the stream_id of the newest update
// delivered before it, else none.
func (c Chain) prevFor(seq uint64) []int64 {
	for i := len(c.Links) - 1; i >= 0; i-- {
		l := c.Links[i]
		switch {
		case l.Seq == seq:
			return l.PrevID
		case l.Seq < seq:
			return []int64{l.StreamID}
		}
	}
	return []int64{}
}

func (c Chain) with(links []Link) Chain {
	out := slices.Clone(c.Links)
	for _, l := range links {
		out = slices.DeleteFunc(out, func(o Link) bool { return o.Seq == l.Seq })
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Link) int { return cmp.Compare(a.Seq, b.Seq) })
	if len(out) > chainHistory {
		out = out[len(out)-chainHistory:]
	}
	return Chain{Links: out}
}

// ChainStore keeps the chains; eventlog.Store is one.
type ChainStore interface {
	LoadChain(ctx context.Context, dest, user string) (Chain, error)
	SaveChain(ctx context.Context, dest, user string, c Chain) error
}

// Chains fills the prev_id of one destination's device-list updates. It
// is used by the destination's one transaction in flight, so by one
// goroutine at a time.
type Chains struct {
	store ChainStore
	dest  string
	cache map[string]Chain
}

// NewChains returns the chains of a destination.
func NewChains(store ChainStore, dest string) *Chains {
	return &Chains{store: store, dest: dest, cache: map[string]Chain{}}
}

// Delivered is what a batch's device-list updates add to the chains, to
// Commit once the destination acknowledged it.
type Delivered map[string][]Link

// Fill sets the prev_id of the batch's m.device_list_update EDUs that have
// none, from the updates delivered to the destination for the same user
// (and earlier in the batch); one with a prev_id is left as it is. Content
// without a user_id and stream_id is left as it is.
func (c *Chains) Fill(ctx context.Context, b *Batch) (Delivered, error) {
	var out Delivered
	for i := range b.EDUs {
		e := &b.EDUs[i]
		if e.Type != TypeDeviceList {
			continue
		}
		var content map[string]json.RawMessage
		if json.Unmarshal(e.Content, &content) != nil {
			continue
		}
		var user string
		var streamID int64
		if json.Unmarshal(content["user_id"], &user) != nil || user == "" || json.Unmarshal(content["stream_id"], &streamID) != nil {
			continue
		}
		chain, err := c.chain(ctx, user)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = Delivered{}
		}
		chain = chain.with(out[user])
		var prev []int64
		if given, ok := content["prev_id"]; ok {
			if json.Unmarshal(given, &prev) != nil {
				prev = nil
			}
		} else {
			prev = chain.prevFor(e.Seq)
			content["prev_id"], _ = json.Marshal(prev)
			filled, _ := json.Marshal(content)
			e.Content = canonical(bytes.Clone(filled))
		}
		out[user] = append(out[user], Link{Seq: e.Seq, StreamID: streamID, PrevID: prev})
	}
	return out, nil
}

func (c *Chains) chain(ctx context.Context, user string) (Chain, error) {
	if ch, ok := c.cache[user]; ok {
		return ch, nil
	}
	ch, err := c.store.LoadChain(ctx, c.dest, user)
	if err != nil {
		return Chain{}, err
	}
	c.cache[user] = ch
	return ch, nil
}

// Commit records what the destination acknowledged, in memory and in the
// store; the first store error is returned after every chain was tried.
func (c *Chains) Commit(ctx context.Context, d Delivered) error {
	var first error
	for user, links := range d {
		ch := c.cache[user].with(links)
		c.cache[user] = ch
		if err := c.store.SaveChain(ctx, c.dest, user, ch); err != nil && first == nil {
			first = err
		}
	}
	return first
}
