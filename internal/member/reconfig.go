package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/raftnode"
)

// Errors of membership changes; package api maps them to etcd's.
var (
	ErrBadURLs            = errors.New("member: given member URLs are invalid")
	ErrPeerURLExist       = errors.New("member: peer URLs already exist")
	ErrMemberNotFound     = errors.New("member: member not found")
	ErrNotLearner         = errors.New("member: can only promote a learner member")
	ErrLearnerNotReady    = errors.New("member: learner is not in sync with the leader")
	ErrTooManyLearners    = errors.New("member: too many learner members in cluster")
	ErrNotEnoughStarted   = errors.New("member: re-configuration would lose quorum")
	ErrNotLeader          = errors.New("member: not leader")
	ErrBadTransferee      = errors.New("member: bad leader transferee")
	ErrReconfigInProgress = errors.New("member: a membership change is in progress")
)

// maxLearners is etcd's default --max-learners.
const maxLearners = 1

func validURLs(urls []string) bool {
	if len(urls) == 0 {
		return false
	}
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return false
		}
		// Compat: etcd needs host:port ("http://[::1]" has no port).
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
			return false
		}
	}
	return true
}

// activeVoters counts the voters this member knows to be reachable: itself
// and those with a live peer stream (etcd's rule) or, as leader, those
// raft has heard from recently. Raft alone would not do: with CheckQuorum
// it forgets every peer's recent activity each election timeout, and a
// change checked just then would count only the leader.
func (m *Member) activeVoters(ctx context.Context) (active, voters int, err error) {
	st, err := m.node.Status(ctx)
	if err != nil {
		return 0, 0, err
	}
	for id := range st.Config.Voters.IDs() {
		voters++
		if id == m.id {
			active++
			continue
		}
		if pr, ok := st.Progress[id]; (ok && st.RaftState == raft.StateLeader && pr.RecentActive) || m.transport.IsActive(id) {
			active++
		}
	}
	return active, voters, nil
}

// reconfigure proposes one membership change and waits until it applies.
func (m *Member) reconfigure(ctx context.Context, typ raftpb.ConfChangeType, id uint64, mem *membership.Member) error {
	if !m.confPending.CompareAndSwap(false, true) {
		return ErrReconfigInProgress
	}
	defer m.confPending.Store(false)
	reqID := m.nextID()
	data, err := json.Marshal(apply.ConfContext{Member: mem, RequestID: reqID})
	if err != nil {
		return err
	}
	cc := &raftpb.ConfChangeV2{
		Changes: []*raftpb.ConfChangeSingle{{Type: typ.Enum(), NodeId: proto.Uint64(id)}},
		Context: data,
	}
	ch, done := m.register(reqID)
	defer done()
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	// As every proposal (see Propose): raft drops a change made
	// while there is no leader, so wait out an election first.
	if err := m.node.WaitLeader(tctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return ErrNoLeaderTimeout
		}
		return m.ctxErr(ctx, err)
	}
	if err := m.node.ProposeConfChange(tctx, cc); err != nil {
		return m.ctxErr(ctx, err)
	}
	select {
	case r := <-ch:
		return r.Err
	case <-tctx.Done():
		return m.ctxErr(ctx, tctx.Err())
	case <-m.stopping:
		return ErrStopped
	}
}

// AddMember adds a voter or a learner with the given peer URLs and returns
// its record.
func (m *Member) AddMember(ctx context.Context, peerURLs []string, learner bool) (membership.Member, error) {
	if !validURLs(peerURLs) {
		return membership.Member{}, ErrBadURLs
	}
	// A peer URL in use and one learner too many are decided when the
	// change commits (confChecker): this member's membership may lag.
	if !learner {
		// Strict reconfig check: the new voter counts toward quorum at
		// once, so the members up now must still make a quorum with it.
		active, voters, err := m.activeVoters(ctx)
		if err != nil {
			return membership.Member{}, m.ctxErr(ctx, err)
		}
		if active < (voters+1)/2+1 {
			return membership.Member{}, ErrNotEnoughStarted
		}
	}
	// As etcd: the ID mixes the time in, so re-adding the same URLs after a
	// removal gives a new ID (IDs are never reused).
	now := time.Now().Unix()
	mem := membership.Member{
		ID:        membership.ComputeMemberID(peerURLs, m.cfg.InitialClusterToken+strconv.FormatInt(now, 10)),
		PeerURLs:  peerURLs,
		IsLearner: learner,
	}
	typ := raftpb.ConfChangeType_ConfChangeAddNode
	if learner {
		typ = raftpb.ConfChangeType_ConfChangeAddLearnerNode
	}
	if err := m.reconfigure(ctx, typ, mem.ID, &mem); err != nil {
		return membership.Member{}, err
	}
	return mem, nil
}

// RemoveMember removes a member.
func (m *Member) RemoveMember(ctx context.Context, id uint64) error {
	// A member unknown here may have been added by a change this member
	// has not applied yet: whether it exists is decided at commit
	// (confChecker), and so are its URLs on update.
	if mem, ok := m.cluster.Member(id); ok && !mem.IsLearner {
		active, voters, err := m.activeVoters(ctx)
		if err != nil {
			return m.ctxErr(ctx, err)
		}
		if m.transport.IsActive(id) || id == m.id {
			active--
		}
		if active < (voters-1)/2+1 {
			return ErrNotEnoughStarted
		}
	}
	return m.reconfigure(ctx, raftpb.ConfChangeType_ConfChangeRemoveNode, id, nil)
}

// UpdateMember changes a member's peer URLs.
func (m *Member) UpdateMember(ctx context.Context, id uint64, peerURLs []string) error {
	if !validURLs(peerURLs) {
		return ErrBadURLs
	}
	return m.reconfigure(ctx, raftpb.ConfChangeType_ConfChangeUpdateNode, id, &membership.Member{ID: id, PeerURLs: peerURLs})
}

// PromoteMember turns a caught-up learner into a voter. Only the leader
// knows how far a learner is, so a follower forwards the request to the
// leader's peer URL, as etcd does.
func (m *Member) PromoteMember(ctx context.Context, id uint64) error {
	mem, ok := m.cluster.Member(id)
	if !ok {
		return ErrMemberNotFound
	}
	if !mem.IsLearner {
		return ErrNotLearner
	}
	st, err := m.node.Status(ctx)
	if err != nil {
		return m.ctxErr(ctx, err)
	}
	if st.RaftState != raft.StateLeader {
		return m.forwardPromote(ctx, st.Lead, id)
	}
	pr, ok := st.Progress[id]
	leader := st.Progress[m.id]
	// etcd's rule: ready once the learner has at least 90% of the leader's log.
	if !ok || pr.State == tracker.StateSnapshot || float64(pr.Match) < 0.9*float64(leader.Match) {
		return ErrLearnerNotReady
	}
	return m.reconfigure(ctx, raftpb.ConfChangeType_ConfChangeAddNode, id, nil)
}

// promoteError maps a forwarded promote's answer back to its error.
func promoteError(text string) error {
	for _, e := range []error{ErrMemberNotFound, ErrNotLearner, ErrLearnerNotReady, ErrNotLeader, ErrReconfigInProgress, ErrTimeout} {
		if e.Error() == text {
			return e
		}
	}
	return nil
}

func (m *Member) forwardPromote(ctx context.Context, lead, id uint64) error {
	if lead == raft.None {
		return raftnode.ErrNoLeader
	}
	ld, ok := m.cluster.Member(lead)
	if !ok || len(ld.PeerURLs) == 0 {
		return ErrNotLeader
	}
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	u := strings.TrimRight(ld.PeerURLs[0], "/") + "/members/promote/" + strconv.FormatUint(id, 16)
	req, err := http.NewRequestWithContext(tctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m.ctxErr(ctx, ErrTimeout)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	if e := promoteError(strings.TrimSpace(string(body))); e != nil {
		return e
	}
	return fmt.Errorf("member: promote forwarded to leader %x: %s", lead, strings.TrimSpace(string(body)))
}

// servePromote answers a promote forwarded by a follower.
func (m *Member) servePromote(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(r.URL.Path, "/members/promote/"), 16, 64)
	if err != nil {
		http.Error(w, "bad member ID", http.StatusBadRequest)
		return
	}
	st, err := m.node.Status(r.Context())
	if err == nil && st.RaftState != raft.StateLeader {
		err = ErrNotLeader // never forward twice
	}
	if err == nil {
		err = m.PromoteMember(r.Context(), id)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// MoveLeader transfers leadership to target and waits until it holds it.
func (m *Member) MoveLeader(ctx context.Context, target uint64) error {
	if m.node.Leader() != m.id {
		return ErrNotLeader
	}
	mem, ok := m.cluster.Member(target)
	if !ok || mem.IsLearner {
		return ErrBadTransferee
	}
	if target == m.id {
		return nil
	}
	tctx, cancel := context.WithTimeout(ctx, m.requestTimeout())
	defer cancel()
	if err := m.node.TransferLeadership(tctx, target); err != nil {
		return m.ctxErr(ctx, err)
	}
	tick := time.NewTicker(m.cfg.HeartbeatInterval)
	defer tick.Stop()
	for m.node.Leader() != target {
		select {
		case <-tick.C:
		case <-tctx.Done():
			return m.ctxErr(ctx, ErrTimeout)
		}
	}
	return nil
}

// IsLearner reports whether this member is a learner.
func (m *Member) IsLearner() bool {
	mem, ok := m.cluster.Member(m.id)
	return ok && mem.IsLearner
}
