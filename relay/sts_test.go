package relay

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/queue"
)

// The MTA-STS policies a deliverer stores are in the database after it is
// closed and opened again, and an expired one is not kept.
func TestSTSStoreSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := queue.OpenStore(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := deliver.StoredSTS{ID: "20261129", Policy: "version: STSv1\nmode: enforce\nmx: mx.dest.test\nmax_age: 86400\n",
		Expires: time.Now().Add(24 * time.Hour).Round(time.Second)}
	s := stsStore{st}
	if err := s.SaveSTS("Dest.Test", want); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSTS("old.test", deliver.StoredSTS{ID: "1", Policy: want.Policy, Expires: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = queue.OpenStore(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s = stsStore{st}
	got, err := s.LoadSTS("dest.test")
	if err != nil || got == nil || got.ID != want.ID || got.Policy != want.Policy || !got.Expires.Equal(want.Expires) {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, want)
	}
	for _, d := range []string{"old.test", "never.test"} {
		if got, err := s.LoadSTS(d); got != nil || err != nil {
			t.Errorf("%s: %+v, %v; want none", d, got, err)
		}
	}
	// The stored text is a policy the deliverer reads back.
	if p, err := deliver.ParseSTSPolicy(got.Policy); err != nil || p.Mode != deliver.STSEnforce {
		t.Errorf("stored policy parses to %+v, %v", p, err)
	}
}
