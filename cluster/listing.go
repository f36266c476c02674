package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
)

// errListingCut is returned when the context ends before the listing
// has read everything the server had.
var errListingCut = errors.New("listing did not reach the end of the bucket")

// listKeys returns the keys of kv matching filter (all keys if empty) that
// are not deleted, sorted.
//
// nats.go's Keys and ListKeysFiltered end a listing at the watcher's
// "initial values done" marker. When the consumer's first info does not
// answer (a stream leader election, load), the watcher believes nothing is
// pending and sends that marker after the first entry: the listing ends
// short without an error. A short list of done records re-delivers what
// was delivered, and a short list of escalations leaves Cases unopened.
// So the end is taken from the server instead: each entry carries the
// number of entries still pending after it, and the listing ends at an
// entry with none pending (or at a marker with no entry before it: an
// empty bucket). Deletes are read, not skipped, because the last entry
// pending may be one.
func listKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	var filters []string
	if filter != "" {
		filters = []string{filter}
	}
	w, err := kv.WatchFiltered(ctx, filters, jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	keys, err := readListing(ctx, w.Updates())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	return keys, nil
}

// readListing reads a watcher's updates to the end of the listing.
func readListing(ctx context.Context, updates <-chan jetstream.KeyValueEntry) ([]string, error) {
	present := map[string]bool{}
	entries := 0
	for {
		select {
		case e, ok := <-updates:
			if !ok {
				return nil, errors.New("watcher closed")
			}
			if e == nil {
				if entries == 0 {
					return sortedKeys(present), nil // nothing matched
				}
				continue // a marker after entries: the pending count decides
			}
			entries++
			// A reset ordered consumer may deliver older revisions again:
			// the last one read per key wins.
			present[e.Key()] = e.Operation() == jetstream.KeyValuePut
			if e.Delta() == 0 {
				return sortedKeys(present), nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("after %d entries: %w (%w)", entries, errListingCut, ctx.Err())
		}
	}
}

func sortedKeys(present map[string]bool) []string {
	keys := make([]string, 0, len(present))
	for k, ok := range present {
		if ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
