package queue

import (
	"testing"
	"time"
)

// TestApplySuppression: a change from another node applies (twice is harmless), a
// removal takes the address off, and neither is handed back to OnSuppress
// (which would send it round the cluster forever); a local change is.
func TestApplySuppression(t *testing.T) {
	st, q := openTest(t, t.TempDir())
	defer st.Close()
	var shared []string
	st.OnSuppress = func(s Suppression, removed bool) {
		shared = append(shared, s.List+"/"+s.Address)
	}
	t0 := time.Now().Add(-time.Minute)
	s := Suppression{List: "bounce", Address: "Gone@Dest.test", Reason: "5.1.1", Time: t0}
	for range 2 {
		if err := q.ApplySuppression(s, false, "n2"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := q.Suppressed("gone@dest.test", []string{"bounce"})
	if err != nil || len(got) != 1 || got[0].Reason != "5.1.1" {
		t.Fatalf("after apply: %+v, %v", got, err)
	}
	if err := q.ApplySuppression(s, true, "n2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Suppressed("gone@dest.test", []string{"bounce"}); len(got) != 0 {
		t.Fatalf("after removal: %+v", got)
	}
	if len(shared) != 0 {
		t.Errorf("applied changes handed to OnSuppress: %v", shared)
	}
	if err := q.AddSuppression(Suppression{List: "bounce", Address: "local@dest.test", Reason: "5.1.1"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := q.RemoveSuppression("bounce", "local@dest.test", "ops"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if len(shared) != 2 {
		t.Errorf("local add and removal shared %v, want both", shared)
	}
	// A removal made elsewhere before a newer add here does not undo it;
	// one made after it does.
	t1 := time.Now()
	if err := q.AddSuppression(Suppression{List: "bounce", Address: "again@dest.test", Reason: "5.1.1", Time: t1}); err != nil {
		t.Fatal(err)
	}
	if err := q.ApplySuppression(Suppression{List: "bounce", Address: "again@dest.test", By: "ops", Time: t1.Add(-30 * time.Second)}, true, "n2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Suppressed("again@dest.test", []string{"bounce"}); len(got) != 1 {
		t.Errorf("an older removal from n2 took off a newer local add: %+v", got)
	}
	if err := q.ApplySuppression(Suppression{List: "bounce", Address: "again@dest.test", By: "ops", Time: t1.Add(time.Second)}, true, "n2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Suppressed("again@dest.test", []string{"bounce"}); len(got) != 0 {
		t.Errorf("a newer removal from n2 left the address on: %+v", got)
	}
}
