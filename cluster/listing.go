package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errListingCut is returned when the context ends before the listing
// has read everything the server had.
var errListingCut = errors.New("listing did not reach the end of the bucket")

// listKeys returns the keys of kv matching filter (all keys if empty) that
// are not deleted, sorted.
//
// Two sources, because neither alone is right. nats.go's Keys and
// ListKeysFiltered end a listing at the watcher's "initial values done"
// marker, which it sends after the first entry when the consumer's first
// info does not answer (a leader election, load): a short list without an
// error. And the watcher's consumer, an R1 ephemeral, is placed on any of
// the stream's replicas, caught up or not: on a node just back, whose
// replica is still catching up, it lists what that replica holds, an empty
// list once in CI. A short list of done records re-delivers what was
// delivered, and a short list of escalations leaves Cases unopened.
//
// So the set of keys comes from the stream's leader (its info with the
// subjects held under the filter, which only the leader answers), and the
// watcher says which of them are deleted; the listing ends at the entry
// the server says has none pending after it. A watcher that misses a key
// the leader holds is a lagging replica: the listing is made again. A key
// the watcher saw deleted is asked of the leader (deletes are rare here).
// The other way round, a key a stale replica still shows put, may be
// listed though deleted: the callers that read values skip a key not
// found, and done records (the long listing) are never deleted.
func listKeys(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, filter string) ([]string, error) {
	fail := func(err error) error { return fmt.Errorf("list %s: %w", kv.Bucket(), err) }
	prefix := "$KV." + kv.Bucket() + "."
	subject := prefix + ">"
	var filters []string
	if filter != "" {
		subject, filters = prefix+filter, []string{filter}
	}
	stream, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, fail(err)
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fail(fmt.Errorf("after %d attempts: %w (%w)", attempt, errListingCut, ctx.Err()))
			case <-time.After(100 * time.Millisecond):
			}
		}
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return nil, fail(err)
		}
		if info.Cluster != nil && info.Cluster.Leader == "" {
			continue // a replica answering for a group without a leader
		}
		held := make([]string, 0, len(info.State.Subjects))
		for subj := range info.State.Subjects {
			held = append(held, strings.TrimPrefix(subj, prefix))
		}
		// A new slice each time: WatchFiltered writes the subjects
		// into the one it is given.
		w, err := kv.WatchFiltered(ctx, slices.Clone(filters), jetstream.MetaOnly())
		if err != nil {
			return nil, fail(err)
		}
		seen, err := readListing(ctx, w.Updates())
		w.Stop()
		if err != nil {
			return nil, fail(err)
		}
		keys, deleted, complete := mergeListing(held, seen)
		if !complete {
			continue
		}
		for _, k := range deleted {
			_, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return nil, fail(err)
			}
			keys = append(keys, k) // put again since, or a stale replica
		}
		sort.Strings(keys)
		return keys, nil
	}
}

// mergeListing splits the keys the leader holds by what the watcher saw
// of each (true: a put, false: a delete or purge). complete is false when
// the watcher missed one.
func mergeListing(held []string, seen map[string]bool) (present, deleted []string, complete bool) {
	for _, k := range held {
		put, ok := seen[k]
		switch {
		case !ok:
			return nil, nil, false
		case put:
			present = append(present, k)
		default:
			deleted = append(deleted, k)
		}
	}
	return present, deleted, true
}

// readListing reads a watcher's updates to the end of the listing: each
// key seen, true if its last entry read is a put.
func readListing(ctx context.Context, updates <-chan jetstream.KeyValueEntry) (map[string]bool, error) {
	seen := map[string]bool{}
	entries := 0
	for {
		select {
		case e, ok := <-updates:
			if !ok {
				return nil, errors.New("watcher closed")
			}
			if e == nil {
				if entries == 0 {
					return seen, nil // nothing matched
				}
				continue // a marker after entries: the pending count decides
			}
			entries++
			// A reset ordered consumer may deliver older revisions again:
			// the last one read per key wins.
			seen[e.Key()] = e.Operation() == jetstream.KeyValuePut
			if e.Delta() == 0 {
				return seen, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("after %d entries: %w (%w)", entries, errListingCut, ctx.Err())
		}
	}
}
