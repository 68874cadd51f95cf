package admin_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/fedsender/fedsender/internal/admin"
	"github.com/fedsender/fedsender/internal/destination"
	"github.com/fedsender/fedsender/internal/projection"
)

// failingReader is a read model whose reads fail (PostgreSQL down): like
// pgprojection.Reader, a failed read answers nothing and turns it unready.
type failingReader struct{ failed bool }

func (f *failingReader) Get(string) (destination.State, bool) {
	f.failed = true
	return destination.State{}, false
}

func (f *failingReader) Page(projection.Query) projection.Page {
	f.failed = true
	return projection.Page{Destinations: []destination.State{}}
}

func (f *failingReader) Ready() bool                { return !f.failed }
func (f *failingReader) Sync(context.Context) error { return nil }

func (f *failingReader) EventSeq(context.Context, string) (uint64, error) {
	f.failed = true
	return 0, errors.New("PostgreSQL is down")
}

// TestFailedReadAnswers503: a read that fails is answered 503, not with an
// empty list or 404.
func TestFailedReadAnswers503(t *testing.T) {
	for _, target := range []string{base, base + "/a.example"} {
		rd := &failingReader{}
		e := newEnv(t, func(o *admin.Options) { o.Reader = rd })
		r := e.do(t, http.MethodGet, target)
		if r.status != http.StatusServiceUnavailable || r.body["errcode"] != "M_UNKNOWN" {
			t.Errorf("GET %s with a failing read = %d %s, want 503 M_UNKNOWN", target, r.status, r.raw)
		}
	}
}
