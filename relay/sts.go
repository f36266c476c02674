package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/latchkey/latchkey/deliver"
	"github.com/latchkey/latchkey/queue"
)

// stsPrefix keys the MTA-STS policies the deliverers fetched: sts/<domain>.
const stsPrefix = "sts/"

// stsStore keeps MTA-STS policies in the relay's database, so that a policy
// seen once still protects a domain's mail right after a restart. Each
// record expires (Badger TTL) with the policy's max_age.
type stsStore struct{ st *queue.Store }

func stsKey(domain string) []byte { return []byte(stsPrefix + strings.ToLower(domain)) }

func (s stsStore) LoadSTS(domain string) (*deliver.StoredSTS, error) {
	var p *deliver.StoredSTS
	err := s.st.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stsKey(domain))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			p = &deliver.StoredSTS{}
			return json.Unmarshal(v, p)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("relay: mta-sts policy of %s: %w", domain, err)
	}
	return p, nil
}

func (s stsStore) SaveSTS(domain string, p deliver.StoredSTS) error {
	ttl := time.Until(p.Expires)
	if ttl <= 0 {
		return nil
	}
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	err = s.st.Update(func(tx *queue.Tx) error {
		return tx.SetEntry(badger.NewEntry(stsKey(domain), v).WithTTL(ttl))
	})
	if err != nil {
		return fmt.Errorf("relay: storing the mta-sts policy of %s: %w", domain, err)
	}
	return nil
}
