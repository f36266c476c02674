package cluster

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestCompareFingerprints(t *testing.T) {
	same := map[string]string{"verp key": "aa", "policy": "pp", "dkim key example.com/s1": "ed25519 k1"}
	cases := []struct {
		name   string
		byNode map[string]map[string]string
		want   []ConfigDiff
	}{
		{"one node", map[string]map[string]string{"n1": same}, nil},
		{"all the same", map[string]map[string]string{"n1": same, "n2": same, "n3": same}, nil},
		{"a key differs", map[string]map[string]string{"n1": same, "n2": same,
			"n3": {"verp key": "bb", "policy": "pp", "dkim key example.com/s1": "ed25519 k1"}},
			[]ConfigDiff{{Name: "verp key", Values: map[string]string{"n1": "aa", "n2": "aa", "n3": "bb"}}}},
		{"a selector only some nodes have, and a policy", map[string]map[string]string{"n1": same,
			"n2": {"verp key": "aa", "policy": "qq", "dkim key example.com/s1": "ed25519 k1", "dkim key example.com/s2": "rsa k2"}},
			[]ConfigDiff{
				{Name: "dkim key example.com/s2", Values: map[string]string{"n1": "", "n2": "rsa k2"}},
				{Name: "policy", Values: map[string]string{"n1": "pp", "n2": "qq"}},
			}},
	}
	for _, c := range cases {
		if got := compareFingerprints(c.byNode); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestSharedFingerprints: what the nodes hold differently shows in every
// node's status, and a dead node's old entry stops counting.
func TestSharedFingerprints(t *testing.T) {
	tc := newTestCluster(t)
	ctx := context.Background()
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	for _, n := range tc.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(rctx, newFakeLocal()) }()
	}
	good := map[string]string{"verp key": "aa", "policy": "pp", "dkim key example.com/s1": "ed25519 k1"}
	for _, n := range tc.nodes[:2] {
		if err := n.ShareConfig(ctx, good); err != nil {
			t.Fatal(err)
		}
	}
	// Before n3 shares anything it is not compared (a node of an older
	// latchkey shares nothing).
	if d, err := tc.nodes[0].ConfigDiffers(ctx); err != nil || len(d) != 0 {
		t.Fatalf("two nodes alike, n3 silent: differs %+v, %v; want none", d, err)
	}
	if err := tc.nodes[2].ShareConfig(ctx, map[string]string{"verp key": "bb", "policy": "pp", "dkim key example.com/s1": "ed25519 k1"}); err != nil {
		t.Fatal(err)
	}
	want := []ConfigDiff{{Name: "verp key", Values: map[string]string{"n1": "aa", "n2": "aa", "n3": "bb"}}}
	for _, n := range tc.nodes {
		// Waited for: only nodes with a heartbeat count, and on a
		// loaded machine a heartbeat can come late (more than
		// dead_after, 2 s here, after the last).
		var st *Status
		var err error
		if !waitUntil(30*time.Second, func() bool {
			st, err = n.Status(ctx)
			return err == nil && reflect.DeepEqual(st.Differs, want)
		}) {
			t.Errorf("%s: status differs %+v, %v; want %+v (members %+v)", n.Name(), st.Differs, err, want, st.Members)
		}
	}
	// Fixed on n3: nothing differs.
	if err := tc.nodes[2].ShareConfig(ctx, good); err != nil {
		t.Fatal(err)
	}
	d, err := tc.nodes[1].ConfigDiffers(ctx)
	if err != nil || len(d) != 0 {
		t.Errorf("after the fix: differs %+v, %v; want none", d, err)
	}
	// n3 shares a bad copy and dies: once its heartbeat is gone, its
	// entry no longer counts.
	if err := tc.nodes[2].ShareConfig(ctx, map[string]string{"verp key": "cc"}); err != nil {
		t.Fatal(err)
	}
	if !waitUntil(30*time.Second, func() bool {
		d, err = tc.nodes[0].ConfigDiffers(ctx)
		return err == nil && len(d) == 3
	}) {
		t.Errorf("n3 with only a different VERP key: differs %+v, %v; want verp key, policy, dkim key", d, err)
	}
	tc.nodes[2].Close()
	tc.nodes[2] = nil
	if !waitUntil(3*tc.cfgs[2].DeadAfter, func() bool {
		d, err := tc.nodes[0].ConfigDiffers(ctx)
		return err == nil && len(d) == 0
	}) {
		d, err := tc.nodes[0].ConfigDiffers(ctx)
		t.Errorf("n3 dead: differs %+v, %v; want none", d, err)
	}
}
