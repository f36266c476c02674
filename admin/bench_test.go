package admin_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/admin"
	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// BenchmarkExportInProcess exports 20,000 audit events as CSV through the
// in-process transport the CLI uses when the relay is stopped.
func BenchmarkExportInProcess(b *testing.B) {
	st, err := queue.OpenStore(b.TempDir(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if st.Audit, err = audit.Open(st.DB, auditKey); err != nil {
		b.Fatal(err)
	}
	q, err := queue.New(st, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	const events = 20000
	for i := 0; i < events; i += 500 {
		err := st.Update(func(tx *queue.Tx) error {
			for j := 0; j < 500; j++ {
				ev := &audit.Event{Time: time.Now(), Type: audit.Delivered, QueueID: "aaaaaaaaaaaaaaaaaa",
					Recipient: "user@example.net", Fields: map[string]string{"mx": "mx.example.net", "code": "250"}}
				if err := tx.Audit(ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	h := admin.Handler(admin.Options{Token: "t", Queue: q, Store: st, Log: zerolog.Nop()})
	c := &admin.Client{BaseURL: "http://latchkey", Token: "t", HTTP: &http.Client{Transport: admin.Transport(h)}}
	b.ResetTimer()
	var n int64
	for i := 0; i < b.N; i++ {
		resp, err := c.Do(context.Background(), "GET", "/api/v1/audit/export?format=csv", nil, "")
		if err != nil {
			b.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(n)/float64(events), "bytes/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}
