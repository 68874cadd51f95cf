package ingest

import (
	"fmt"
	"testing"

	"github.com/fedsender/fedsender/streams"
)

func TestRecentEventsForgetAfterAMinuteAndPastTheBound(t *testing.T) {
	r := NewRecentEvents()
	item := func(id string, ts int64) streams.Item {
		return streams.Item{TS: ts, PDU: &streams.PDU{EventID: id}}
	}
	r.add([]streams.Item{item("$old", 1000), item("$new", 50_000)}, 61_500)
	if r.Recent("$old", 61_500) || !r.Recent("$new", 61_500) || r.Recent("$unknown", 61_500) {
		t.Error("want only $new recent 61.5 s in")
	}
	var many []streams.Item
	for i := range maxRecent + 10 {
		many = append(many, item(fmt.Sprint("$", i), 60_000))
	}
	r.add(many, 60_000)
	if r.Recent("$0", 60_000) || !r.Recent(fmt.Sprint("$", maxRecent+9), 60_000) || len(r.at) > maxRecent {
		t.Errorf("past %d events the oldest must be forgotten: %d remembered", maxRecent, len(r.at))
	}
}
