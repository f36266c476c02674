package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// oneServerKV starts a single JetStream server on loopback and returns a
// bucket in it.
func oneServerKV(t *testing.T) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "lk_test"})
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

func TestListKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, kv := oneServerKV(t)
	if got, err := listKeys(ctx, js, kv, ""); err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v, %v", got, err)
	}
	var want []string
	for i := range 3000 {
		k := fmt.Sprintf("n1.item%04d", i)
		if _, err := kv.PutString(ctx, k, "done"); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := kv.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want = append(want, k)
	}
	for i := range 50 {
		if _, err := kv.PutString(ctx, fmt.Sprintf("n2.item%04d", i), "done"); err != nil {
			t.Fatal(err)
		}
	}
	// The last entry under n1 is a delete: a listing that read only puts
	// would never see the entry with none pending after it.
	if _, err := kv.PutString(ctx, "n1.last", "x"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "n1.last"); err != nil {
		t.Fatal(err)
	}
	got, err := listKeys(ctx, js, kv, "n1.>")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("listed %d keys under n1, want %d", len(got), len(want))
	}
	if got, err := listKeys(ctx, js, kv, "n3.>"); err != nil || len(got) != 0 {
		t.Errorf("no key under n3: %v, %v", got, err)
	}
	all, err := listKeys(ctx, js, kv, "")
	if err != nil || len(all) != len(want)+50 {
		t.Errorf("listed %d keys in all, want %d (%v)", len(all), len(want)+50, err)
	}

	// Writes elsewhere while listing do not keep the listing from ending.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			kv.PutString(wctx, fmt.Sprintf("n2.busy%d", i%100), "x")
		}
	}()
	for range 3 {
		if got, err := listKeys(ctx, js, kv, "n1.>"); err != nil || len(got) != len(want) {
			t.Errorf("listing during writes: %d keys, %v; want %d", len(got), err, len(want))
		}
	}
}

type entry struct {
	key   string
	op    jetstream.KeyValueOp
	delta uint64
}

func (e entry) Bucket() string                  { return "lk_test" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return nil }
func (e entry) Revision() uint64                { return 0 }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return e.delta }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

// What nats.go's watcher sends when the consumer's first info did not
// answer: the "initial values done" marker after the first entry, with
// entries still pending. The listing reads on to the last one.
func TestReadListingEarlyMarker(t *testing.T) {
	ctx := context.Background()
	updates := make(chan jetstream.KeyValueEntry, 10)
	updates <- entry{key: "n1.a", op: jetstream.KeyValuePut, delta: 3}
	updates <- nil
	updates <- entry{key: "n1.b", op: jetstream.KeyValuePut, delta: 2}
	updates <- entry{key: "n1.a", op: jetstream.KeyValueDelete, delta: 1}
	updates <- entry{key: "n1.c", op: jetstream.KeyValuePut, delta: 0}
	updates <- entry{key: "n1.late", op: jetstream.KeyValuePut, delta: 0}
	got, err := readListing(ctx, updates)
	if err != nil || fmt.Sprint(got) != "map[n1.a:false n1.b:true n1.c:true]" {
		t.Errorf("listing = %v, %v; want n1.a deleted, n1.b and n1.c", got, err)
	}

	// An empty bucket: the marker comes first.
	updates = make(chan jetstream.KeyValueEntry, 1)
	updates <- nil
	if got, err := readListing(ctx, updates); err != nil || len(got) != 0 {
		t.Errorf("empty listing = %v, %v", got, err)
	}

	// The server stops answering before the end: an error, not a short list.
	updates = make(chan jetstream.KeyValueEntry, 2)
	updates <- entry{key: "n1.a", op: jetstream.KeyValuePut, delta: 5}
	updates <- nil
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if got, err := readListing(cctx, updates); !errors.Is(err, errListingCut) {
		t.Errorf("cut listing = %v, %v; want errListingCut", got, err)
	}
}

// What a watcher on a replica still catching up lists, against what the
// stream's leader holds: a listing with a key missing is not complete,
// and a key seen deleted is to be asked of the leader.
func TestMergeListing(t *testing.T) {
	held := []string{"n1.a", "n1.b", "n1.c"}
	if _, _, complete := mergeListing(held, map[string]bool{}); complete {
		t.Error("an empty watcher listing against three keys held: complete")
	}
	if _, _, complete := mergeListing(held, map[string]bool{"n1.a": true, "n1.c": true, "n1.new": true}); complete {
		t.Error("n1.b missing: complete")
	}
	present, deleted, complete := mergeListing(held, map[string]bool{"n1.a": true, "n1.b": false, "n1.c": true, "n1.new": true})
	if !complete || !slices.Equal(present, []string{"n1.a", "n1.c"}) || !slices.Equal(deleted, []string{"n1.b"}) {
		t.Errorf("merge = %v, %v, %v; want [n1.a n1.c], [n1.b], complete", present, deleted, complete)
	}
	if present, _, complete := mergeListing(nil, map[string]bool{"n1.new": true}); !complete || len(present) != 0 {
		t.Errorf("nothing held: %v, %v", present, complete)
	}
}

// A key deleted and put again: however the watcher saw it, the leader's
// answer stands.
func TestListKeysPutAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, kv := oneServerKV(t)
	for _, k := range []string{"n1.a", "n1.b"} {
		if _, err := kv.PutString(ctx, k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "n1.a"); err != nil {
		t.Fatal(err)
	}
	if got, err := listKeys(ctx, js, kv, "n1.>"); err != nil || !slices.Equal(got, []string{"n1.b"}) {
		t.Errorf("after a delete: %v, %v; want [n1.b]", got, err)
	}
	if _, err := kv.PutString(ctx, "n1.a", "again"); err != nil {
		t.Fatal(err)
	}
	if got, err := listKeys(ctx, js, kv, "n1.>"); err != nil || !slices.Equal(got, []string{"n1.a", "n1.b"}) {
		t.Errorf("put again: %v, %v; want [n1.a n1.b]", got, err)
	}
}

// TestListKeysNodeBack: a node back after writes it missed lists them all
// at once, while its own replica is still catching up (a watcher's
// consumer may be placed there; it listed nothing once in CI).
func TestListKeysNodeBack(t *testing.T) {
	tc := newTestCluster(t)
	ctx := context.Background()
	tc.nodes[0].Close()
	tc.nodes[0] = nil
	const count = 3000
	for i := range count {
		if _, err := tc.nodes[1].done.Put(ctx, fmt.Sprintf("n9.item%05d", i), []byte("n9 delivered")); err != nil {
			t.Fatal(err)
		}
	}
	n1, err := tc.start(0)
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[0] = n1
	for i := range 10 {
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		keys, err := listKeys(lctx, n1.js, n1.done, "n9.>")
		cancel()
		if err != nil {
			t.Errorf("listing %d: %v", i, err)
			continue
		}
		if len(keys) != count {
			t.Errorf("listing %d on the node back: %d keys, want %d", i, len(keys), count)
		}
	}
}
