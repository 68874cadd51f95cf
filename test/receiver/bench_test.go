package receiver

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

// BenchmarkHandler measures the receiver's own cost per 50-PDU transaction
// (signature check, parsing, recording, answer), without TLS and HTTP.
func BenchmarkHandler(b *testing.B) {
	for _, skip := range []bool{false, true} {
		b.Run(fmt.Sprintf("SkipSignatureCheck=%v", skip), func(b *testing.B) {
			e := newEnv(b, func(o *Options) { o.SkipSignatureCheck = skip })
			g := e.rcv.gen
			b.ReportAllocs()
			for i := range b.N {
				b.StopTimer()
				txnID := fmt.Sprintf("t%d", i)
				body := txn(ids(txnID+"_", 50), 0)
				content, err := canonicaljson.Canonicalize(body)
				if err != nil {
					b.Fatal(err)
				}
				path := sendPrefix + txnID
				req := httptest.NewRequest(http.MethodPut, path, bytes.NewReader(body))
				req.Header.Set("Authorization", xmatrix.SignRequest(e.key, origin, e.rcv.ServerName(), http.MethodPut, path, content))
				rec := httptest.NewRecorder()
				b.StartTimer()
				e.rcv.serveHTTP(g, rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("answer %d %s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(b.N*50)/b.Elapsed().Seconds(), "PDUs/s")
			if v := e.rcv.Violations(); len(v) > 0 {
				b.Fatal(v)
			}
		})
	}
}
