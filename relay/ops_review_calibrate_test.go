package relay

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/conf"
	"github.com/latchkey/latchkey/policy"
	"github.com/latchkey/latchkey/queue"
)

// syncBuf is a log sink safe for the calibration goroutine and the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// One failed calibration must not end the hourly check for good: the loop
// keeps running (and warning) until the relay closes.
func TestReviewCalibrateSurvivesAnError(t *testing.T) {
	store, err := queue.OpenStore(t.TempDir(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	store.Close() // every read now fails
	pol, err := policy.Parse("policy.toml", conf.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	s := &Server{Store: store, Policy: policy.NewStore("", pol), log: zerolog.New(&logs), now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.calibrate(ctx, time.Millisecond)
	}()
	for logs.count("expiry calibration failed") < 2 {
		select {
		case <-done:
			t.Fatalf("calibration loop ended after a failure while the relay runs (%d failure logged)", logs.count("expiry calibration failed"))
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
}
