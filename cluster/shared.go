package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
)

// What every node must hold the same is not shared through the cluster:
// the VERP key (a bounce comes back to any node), the DKIM keys (every
// node signs for the same selectors), the policy (every node classes a
// message alike). An operator copies them. A copy that differs fails
// silently: bounces unrecognised on one node, signatures that do not
// verify against the published record. So each node stores fingerprints
// of its copies under its name in bucket lk_shared, and `latchkey cluster
// status` compares them.

// ConfigDiff is one thing the nodes hold differently.
type ConfigDiff struct {
	// Name is what differs, as the relay names it ("verp key", "policy",
	// "dkim key example.com/s1").
	Name string `json:"name"`
	// Values is each node's fingerprint of it; "" when the node has none.
	Values map[string]string `json:"values"`
}

// ShareConfig stores this node's fingerprints (name → fingerprint; none of
// them may reveal a secret) for the other nodes to compare.
func (n *Node) ShareConfig(ctx context.Context, fp map[string]string) error {
	b, err := json.Marshal(fp)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if _, err := n.shared.Put(ctx, n.cfg.Node, b); err != nil {
		return fmt.Errorf("cluster: share this node's fingerprints: %w", err)
	}
	return nil
}

// ConfigDiffers compares the fingerprints of the nodes with a heartbeat.
func (n *Node) ConfigDiffers(ctx context.Context) ([]ConfigDiff, error) {
	members, err := n.memberStatus(ctx)
	if err != nil {
		return nil, err
	}
	return n.configDiffers(ctx, members)
}

// configDiffers compares the fingerprints of the members alive. A node
// that died keeps its entry, left out until it beats again: what it held
// then may have been fixed since.
func (n *Node) configDiffers(ctx context.Context, members []MemberStatus) ([]ConfigDiff, error) {
	byNode := map[string]map[string]string{}
	for _, m := range members {
		if !m.Alive {
			continue
		}
		e, err := n.shared.Get(ctx, m.Name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // a node of an older latchkey, or not shared yet
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: %s's fingerprints: %w", m.Name, err)
		}
		fp := map[string]string{}
		if err := json.Unmarshal(e.Value(), &fp); err != nil {
			return nil, fmt.Errorf("cluster: %s's fingerprints: %w", m.Name, err)
		}
		byNode[m.Name] = fp
	}
	return compareFingerprints(byNode), nil
}

// compareFingerprints returns, sorted by name, every name whose
// fingerprint is not the same on all the nodes given (missing on some
// counts as different).
func compareFingerprints(byNode map[string]map[string]string) []ConfigDiff {
	names := map[string]bool{}
	for _, fp := range byNode {
		for name := range fp {
			names[name] = true
		}
	}
	var out []ConfigDiff
	for name := range names {
		values := map[string]string{}
		distinct := map[string]bool{}
		for node, fp := range byNode {
			values[node] = fp[name]
			distinct[fp[name]] = true
		}
		if len(distinct) > 1 {
			out = append(out, ConfigDiff{Name: name, Values: values})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
