// Package membership owns the cluster's member list and the IDs derived
// from it. Member and cluster IDs are computed exactly as etcd computes
// them (SHA-1 of the sorted peer URLs and the cluster token; SHA-1 of the
// sorted member IDs), so that a cluster bootstrapped with the same flags
// shows the same IDs in headers and `member list`.
//
// The member list is changed only by the applier (through raft) and stored
// in the Meta keyspace; this package never proposes anything itself.
package membership

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Member is one cluster member as stored and as reported by MemberList.
type Member struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs,omitempty"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// ComputeMemberID returns etcd's member ID for these peer URLs and token.
func ComputeMemberID(peerURLs []string, token string) uint64 {
	urls := append([]string(nil), peerURLs...)
	sort.Strings(urls)
	b := []byte(strings.Join(urls, ""))
	b = append(b, []byte(token)...)
	h := sha1.Sum(b)
	return binary.BigEndian.Uint64(h[:8])
}

// ComputeClusterID returns etcd's cluster ID for these member IDs.
func ComputeClusterID(ids []uint64) uint64 {
	ids = append([]uint64(nil), ids...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	b := make([]byte, 8*len(ids))
	for i, id := range ids {
		binary.BigEndian.PutUint64(b[8*i:], id)
	}
	h := sha1.Sum(b)
	return binary.BigEndian.Uint64(h[:8])
}

// ParseInitialCluster parses "name=url,name=url" into members with IDs.
func ParseInitialCluster(s, token string) ([]Member, error) {
	byName := map[string][]string{}
	var order []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=peerURL", part)
		}
		if pu, err := url.Parse(u); err != nil || pu.Host == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not a valid peer URL", u)
		}
		if _, ok := byName[name]; !ok {
			order = append(order, name)
		}
		byName[name] = append(byName[name], u)
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("--initial-cluster is empty")
	}
	members := make([]Member, 0, len(order))
	seen := map[uint64]string{}
	for _, name := range order {
		m := Member{ID: ComputeMemberID(byName[name], token), Name: name, PeerURLs: byName[name]}
		if other, dup := seen[m.ID]; dup {
			return nil, fmt.Errorf("--initial-cluster: members %q and %q have the same peer URLs", other, name)
		}
		seen[m.ID] = name
		members = append(members, m)
	}
	return members, nil
}

// Cluster is the in-memory view of the member list, kept in step with the
// applier's committed batches.
type Cluster struct {
	onChange  func()
	mu        sync.RWMutex
	clusterID uint64
	members   map[uint64]*Member
}

// Load reads the cluster ID and members from r.
func Load(r pebble.Reader) (*Cluster, error) {
	c := &Cluster{}
	if err := c.Reload(r); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload replaces the in-memory view with what r holds (after a snapshot
// was installed).
func (c *Cluster) Reload(r pebble.Reader) error {
	var clusterID uint64
	members := map[uint64]*Member{}
	v, closer, err := r.Get(schema.ClusterIDKey)
	if err == nil {
		if len(v) != 8 {
			closer.Close()
			return fmt.Errorf("membership: cluster ID record is corrupt (%d bytes, want 8)", len(v))
		}
		clusterID = binary.BigEndian.Uint64(v)
		closer.Close()
	} else if err != pebble.ErrNotFound {
		return err
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: schema.MemberPrefix, UpperBound: schema.PrefixEnd(schema.MemberPrefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		m := &Member{}
		if err := json.Unmarshal(it.Value(), m); err != nil {
			return fmt.Errorf("membership: member record %x is corrupt: %w", it.Key(), err)
		}
		if k := it.Key(); len(k) != len(schema.MemberPrefix)+8 || binary.BigEndian.Uint64(k[len(schema.MemberPrefix):]) != m.ID {
			return fmt.Errorf("membership: member record %x is corrupt: its key does not hold its ID %x", k, m.ID)
		}
		members[m.ID] = m
	}
	if err := it.Error(); err != nil {
		return err
	}
	c.mu.Lock()
	c.clusterID, c.members = clusterID, members
	c.mu.Unlock()
	c.changed()
	return nil
}

// OnChange sets a function called (outside the lock) after every change
// of the member list. Set it before the applier runs.
func (c *Cluster) OnChange(fn func()) { c.onChange = fn }

func (c *Cluster) changed() {
	if c.onChange != nil {
		c.onChange()
	}
}

// StageRemoveMember deletes member id from b and marks the ID as removed
// (IDs are never reused).
func StageRemoveMember(b *pebble.Batch, id uint64) error {
	if err := b.Delete(binary.BigEndian.AppendUint64(append([]byte(nil), schema.MemberPrefix...), id), nil); err != nil {
		return err
	}
	return b.Set(binary.BigEndian.AppendUint64(append([]byte(nil), schema.RemovedMemberPrefix...), id), nil, nil)
}

// IsRemoved reports whether id was removed from the cluster.
func IsRemoved(r pebble.Reader, id uint64) bool {
	_, closer, err := r.Get(binary.BigEndian.AppendUint64(append([]byte(nil), schema.RemovedMemberPrefix...), id))
	if err != nil {
		return false
	}
	closer.Close()
	return true
}

// RemoveMember updates the in-memory view after the batch committed.
func (c *Cluster) RemoveMember(id uint64) {
	c.mu.Lock()
	delete(c.members, id)
	c.mu.Unlock()
	c.changed()
}

// ClusterID returns the cluster ID (0 before bootstrap is applied).
func (c *Cluster) ClusterID() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.clusterID
}

// Members returns a copy of the members sorted by ID.
func (c *Cluster) Members() []Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Member returns one member.
func (c *Cluster) Member(id uint64) (Member, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.members[id]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// StageClusterID records the cluster ID in b; Set makes it visible.
func StageClusterID(b *pebble.Batch, id uint64) error {
	return b.Set(schema.ClusterIDKey, binary.BigEndian.AppendUint64(nil, id), nil)
}

// StageMember records m in b.
func StageMember(b *pebble.Batch, m Member) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Set(binary.BigEndian.AppendUint64(append([]byte(nil), schema.MemberPrefix...), m.ID), data, nil)
}

// SetClusterID updates the in-memory view after the batch committed.
func (c *Cluster) SetClusterID(id uint64) {
	c.mu.Lock()
	c.clusterID = id
	c.mu.Unlock()
}

// SetMember updates the in-memory view after the batch committed.
func (c *Cluster) SetMember(m Member) {
	c.mu.Lock()
	c.members[m.ID] = &m
	c.mu.Unlock()
	c.changed()
}
