package edu

import (
	"context"
	"errors"
	"fmt"
	"github.com/fedsender/fedsender/streams"
	"strings"
	"testing"
)

// memChains is a ChainStore in memory: the store itself is not what these
// tests exercise (the end-to-end tests use the KV bucket).
type memChains map[string]Chain

func (m memChains) LoadChain(_ context.Context, dest, user string) (Chain, error) {
	return m[dest+"|"+user], nil
}

func (m memChains) SaveChain(_ context.Context, dest, user string, c Chain) error {
	m[dest+"|"+user] = c
	return nil
}

func deviceUpdate(seq uint64, user string, streamID int, prev string) streams.EDUItem {
	content := fmt.Sprintf(`{"device_id":"D","stream_id":%d,"user_id":"%s"%s}`, streamID, user, prev)
	return item(seq, TypeDeviceList, "", content)
}

func prevIDs(b *Batch) []string {
	var out []string
	for _, e := range b.EDUs {
		if i := strings.Index(string(e.Content), `"prev_id":`); i >= 0 {
			out = append(out, string(e.Content[i+len(`"prev_id":`):strings.Index(string(e.Content[i:]), "]")+i+1]))
		} else {
			out = append(out, "-")
		}
	}
	return out
}

func TestPrevIDChainsPerUserAcrossTransactionsAndRestarts(t *testing.T) {
	ctx := context.Background()
	store := memChains{}
	o := New(Options{}, 0)
	o.Add(deviceUpdate(1, "@a:x", 10, ""), false)
	o.Add(deviceUpdate(2, "@b:x", 20, ""), false)
	o.Add(deviceUpdate(3, "@a:x", 11, ""), false)
	o.Add(deviceUpdate(4, "@a:x", 12, `,"prev_id":[7]`), false)
	chains := NewChains(store, "d.org")
	b := o.Take(now)
	d, err := chains.Fill(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(prevIDs(b)); got != "[[] [] [10] [7]]" {
		t.Errorf("prev_ids %s: want none for first updates, the previous stream_id after, a given one kept", got)
	}
	if err := chains.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	o.Acked(b)
	// A new actor (after a restart) continues the chain from the store.
	o.Add(deviceUpdate(5, "@a:x", 13, ""), false)
	b = o.Take(now)
	if _, err := NewChains(store, "d.org").Fill(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(prevIDs(b)); got != "[[12]]" {
		t.Errorf("after a restart prev_id %s, want [12]", got)
	}
	// An update delivered before and sent again gets the same prev_id.
	o2 := New(Options{}, 2)
	o2.Add(deviceUpdate(3, "@a:x", 11, ""), false)
	b = o2.Take(now)
	if _, err := NewChains(store, "d.org").Fill(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(prevIDs(b)); got != "[[10]]" {
		t.Errorf("resent update prev_id %s, want [10] as the first time", got)
	}
	// Another destination has its own chain.
	o3 := New(Options{}, 0)
	o3.Add(deviceUpdate(9, "@a:x", 13, ""), false)
	b = o3.Take(now)
	if _, err := NewChains(store, "e.org").Fill(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(prevIDs(b)); got != "[[]]" {
		t.Errorf("other destination prev_id %s, want []", got)
	}
}

type failingChains struct{}

func (failingChains) LoadChain(context.Context, string, string) (Chain, error) {
	return Chain{}, errors.New("nats down")
}
func (failingChains) SaveChain(context.Context, string, string, Chain) error { return nil }

func TestFillReportsAStoreFailure(t *testing.T) {
	o := New(Options{}, 0)
	o.Add(deviceUpdate(1, "@a:x", 10, ""), false)
	if _, err := NewChains(failingChains{}, "d.org").Fill(context.Background(), o.Take(now)); err == nil {
		t.Error("no error")
	}
}
