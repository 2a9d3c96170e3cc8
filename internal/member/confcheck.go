package member

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// confChecker is the member's raftnode.ConfChecker: it turns down, at
// commit, a membership change that conflicts with the membership as of the
// entry before it (a peer URL in use, an unknown member, one learner too
// many). Two changes proposed through different members, or one proposed
// through a member that has not yet applied an earlier one, are thereby
// decided in log order and alike on every member, as etcd does when it
// applies them. The checks before proposing (reconfig.go) only spare the
// log an entry that would certainly be refused.
//
// Which members exist comes from raft's configuration (the same on every
// member at a log position); their peer URLs from the stored membership,
// kept in step here with each accepted change, since the applier may not
// have applied the entries before this one yet.
type confChecker struct {
	cluster *membership.Cluster
	// urls is the peer URLs of every member, as of the last change
	// checked (raft goroutine only).
	urls map[uint64][]string
}

func newConfChecker(c *membership.Cluster) *confChecker {
	ck := &confChecker{cluster: c}
	ck.ConfRestored()
	return ck
}

// ConfRestored reseeds the peer URLs from the stored membership: at start
// (the applied index's), and after a snapshot was installed (the
// snapshot's). Raft's configuration is at the same position both times.
func (ck *confChecker) ConfRestored() {
	ck.urls = map[uint64][]string{}
	for _, m := range ck.cluster.Members() {
		ck.urls[m.ID] = m.PeerURLs
	}
}

// CheckConfChange implements raftnode.ConfChecker.
func (ck *confChecker) CheckConfChange(conf raftnode.ConfMembers, cc *raftpb.ConfChangeV2) error {
	var cctx apply.ConfContext
	if len(cc.GetContext()) > 0 {
		if err := json.Unmarshal(cc.GetContext(), &cctx); err != nil {
			return fmt.Errorf("member: conf change context is not Cairn's: %w", err)
		}
	}
	conf = maps.Clone(conf)
	urls := map[uint64][]string{}
	for _, ch := range cc.GetChanges() {
		id := ch.GetNodeId()
		_, exists := conf[id]
		switch ch.GetType() {
		case raftpb.ConfChangeType_ConfChangeAddNode, raftpb.ConfChangeType_ConfChangeAddLearnerNode:
			learner := ch.GetType() == raftpb.ConfChangeType_ConfChangeAddLearnerNode
			if exists {
				// A promotion, or a member of the initial cluster (raft
				// put those in its configuration at bootstrap already).
				conf[id] = learner
				if cctx.Member != nil && cctx.Member.ID == id {
					urls[id] = cctx.Member.PeerURLs
				}
				continue
			}
			if cctx.Member == nil || cctx.Member.ID != id {
				return fmt.Errorf("member: conf change adds member %x without its record", id)
			}
			if ck.urlUsed(conf, cctx.Member.PeerURLs, id) {
				return ErrPeerURLExist
			}
			if learner && countLearners(conf) >= maxLearners {
				return ErrTooManyLearners
			}
			conf[id] = learner
			urls[id] = cctx.Member.PeerURLs
		case raftpb.ConfChangeType_ConfChangeRemoveNode:
			if !exists {
				return ErrMemberNotFound
			}
			delete(conf, id)
		case raftpb.ConfChangeType_ConfChangeUpdateNode:
			if !exists {
				return ErrMemberNotFound
			}
			if cctx.Member == nil {
				return fmt.Errorf("member: conf change updates member %x without its record", id)
			}
			if ck.urlUsed(conf, cctx.Member.PeerURLs, id) {
				return ErrPeerURLExist
			}
			urls[id] = cctx.Member.PeerURLs
		}
	}
	// Accepted as a whole: remember the URLs it gives.
	for id, u := range urls {
		ck.urls[id] = u
	}
	for id := range ck.urls {
		if _, ok := conf[id]; !ok {
			delete(ck.urls, id)
		}
	}
	return nil
}

// urlUsed reports whether a member of conf other than except has one of
// urls.
func (ck *confChecker) urlUsed(conf raftnode.ConfMembers, urls []string, except uint64) bool {
	for id := range conf {
		if id == except {
			continue
		}
		for _, u := range ck.urls[id] {
			if slices.Contains(urls, u) {
				return true
			}
		}
	}
	return false
}

func countLearners(conf raftnode.ConfMembers) int {
	n := 0
	for _, learner := range conf {
		if learner {
			n++
		}
	}
	return n
}
