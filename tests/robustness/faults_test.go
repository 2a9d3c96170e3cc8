package robustness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cairnkv/cairn/internal/failpoint"
)

// fault is one kind of failure the nemesis injects. inject breaks
// something, lets the traffic run against it, and repairs it; the caller
// then waits for the cluster to be healthy again.
type fault struct {
	name      string
	multi     bool // needs 3 members
	cairnOnly bool // needs cairn (crash points, source-identified links)
	inject    func(ctx context.Context, r *run) error
}

// holdFor lets the traffic run against a fault for d.
func holdFor(ctx context.Context, d time.Duration) error {
	return pause(ctx, d)
}

func (r *run) randomMember() *member {
	rs := r.c.running()
	return rs[r.rng.IntN(len(rs))]
}

func (r *run) randomFollower(ctx context.Context) (*member, *member, error) {
	lead, err := r.c.waitLeader(ctx)
	if err != nil {
		return nil, nil, err
	}
	var fs []*member
	for _, m := range r.c.running() {
		if m != lead {
			fs = append(fs, m)
		}
	}
	if len(fs) == 0 {
		return nil, lead, errors.New("no follower")
	}
	return fs[r.rng.IntN(len(fs))], lead, nil
}

func (r *run) holdTime() time.Duration {
	return time.Duration(500+r.rng.IntN(1500)) * time.Millisecond
}

func killRestart(pick func(ctx context.Context, r *run) (*member, error)) func(ctx context.Context, r *run) error {
	return func(ctx context.Context, r *run) error {
		m, err := pick(ctx, r)
		if err != nil {
			return err
		}
		r.logf("kill -9 %s", m.name)
		r.c.kill(m)
		if err := holdFor(ctx, r.holdTime()); err != nil {
			return err
		}
		r.logf("restart %s", m.name)
		return r.c.restart(m)
	}
}

func pickRandom(_ context.Context, r *run) (*member, error) { return r.randomMember(), nil }
func pickLeader(ctx context.Context, r *run) (*member, error) {
	return r.c.waitLeader(ctx)
}

func partition(what string) func(ctx context.Context, r *run) error {
	return func(ctx context.Context, r *run) error {
		f, lead, err := r.randomFollower(ctx)
		if err != nil {
			return err
		}
		n := r.c.cfg.size
		var links []link
		switch what {
		case "leader":
			links = isolateLinks(n, lead.idx)
			r.logf("partition: %s (leader) isolated", lead.name)
		case "minority":
			links = isolateLinks(n, f.idx)
			r.logf("partition: %s (follower) isolated; the majority keeps the leader", f.name)
		case "ring":
			links = []link{{lead.idx, f.idx}, {f.idx, lead.idx}}
			r.logf("partition: ring: %s (leader) and %s cannot talk; each still reaches a majority", lead.name, f.name)
		}
		// Half the time the cut links stall (bytes held, as with a packet
		// filter: TCP delivers what was in flight after the heal), half the
		// time their connections are reset (in-flight messages are lost).
		lf := linkFault{blocked: true}
		if r.rng.IntN(2) == 0 {
			lf = linkFault{reset: true}
		}
		r.logf("partition mode: %s", map[bool]string{true: "stall", false: "reset"}[lf.blocked])
		r.c.proxy.set(lf, links...)
		err = holdFor(ctx, time.Duration(r.c.cfg.electionMs)*time.Millisecond*2+r.holdTime())
		r.c.proxy.healAll()
		r.logf("partition healed")
		return err
	}
}

func pauseLeader(ctx context.Context, r *run) error {
	m, err := r.c.waitLeader(ctx)
	if err != nil {
		return err
	}
	r.logf("SIGSTOP %s (leader)", m.name)
	if err := m.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	err = holdFor(ctx, time.Duration(r.c.cfg.electionMs)*time.Millisecond*2+r.holdTime())
	r.logf("SIGCONT %s", m.name)
	if cerr := m.signal(syscall.SIGCONT); cerr != nil {
		return cerr
	}
	return err
}

func networkFault(f linkFault, what string) func(ctx context.Context, r *run) error {
	return func(ctx context.Context, r *run) error {
		var all []link
		for i := 1; i <= r.c.cfg.size; i++ {
			for j := 1; j <= r.c.cfg.size; j++ {
				if i != j {
					all = append(all, link{i, j})
				}
			}
		}
		r.logf("network: %s on every link", what)
		r.c.proxy.set(f, all...)
		err := holdFor(ctx, 2*time.Second+r.holdTime())
		r.c.proxy.healAll()
		r.logf("network healed")
		return err
	}
}

func memberReplace(ctx context.Context, r *run) error {
	m := r.randomMember()
	r.logf("replace %s: remove, wipe, add back", m.name)
	return r.c.replace(ctx, m)
}

// snapshotCatchUp isolates a follower until the leader has compacted its
// raft log past what the follower has, then heals: the follower must
// catch up from a snapshot.
func snapshotCatchUp(ctx context.Context, r *run) error {
	f, lead, err := r.randomFollower(ctx)
	if err != nil {
		return err
	}
	st := r.c.status(ctx, lead)
	if st.err != nil {
		return st.err
	}
	need := st.raftIndex + uint64(r.c.cfg.snapshotCount+r.c.cfg.catchUp) + 10
	r.logf("snapshot catch-up: %s isolated until the leader %s passes raft index %d", f.name, lead.name, need)
	// Reset, not stall: appends in flight must be lost, or the follower
	// catches up from them.
	r.c.proxy.set(linkFault{reset: true}, isolateLinks(r.c.cfg.size, f.idx)...)
	defer r.c.proxy.healAll()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st := r.c.status(wctx, lead)
		if st.err == nil && st.raftIndex >= need {
			break
		}
		if err := pause(wctx, 100*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.logf("snapshot catch-up: the leader did not reach index %d in 30s (last %d, %v); healing anyway", need, st.raftIndex, st.err)
			break
		}
	}
	before := installedSnapshots(f)
	r.c.proxy.healAll()
	r.logf("snapshot catch-up: healed %s", f.name)
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for installedSnapshots(f) == before {
		if pause(wctx, 100*time.Millisecond) != nil {
			r.logf("note: no snapshot installation logged by %s within 10s of healing (it may have caught up from the log)", f.name)
			return nil
		}
	}
	r.logf("snapshot catch-up: %s installed a snapshot", f.name)
	return nil
}

// installedSnapshots counts the snapshot installations member m logged
// in its current process (cairn: "installed snapshot"; etcd: "applied
// snapshot").
func installedSnapshots(m *member) int {
	b, err := os.ReadFile(m.logs[len(m.logs)-1])
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(`"installed snapshot"`)) + bytes.Count(b, []byte(`"applied snapshot"`))
}

// crashPoint restarts a member with CAIRN_FAILPOINTS set so that it exits
// at the named step, waits for the crash, and restarts it clean.
func crashPoint(name string) func(ctx context.Context, r *run) error {
	return func(ctx context.Context, r *run) error {
		var target *member
		var err error
		snapshot := strings.HasPrefix(name, "snapshot-")
		if snapshot && r.c.cfg.size > 1 {
			target, _, err = r.randomFollower(ctx)
		} else if r.rng.IntN(2) == 0 {
			target, err = r.c.waitLeader(ctx)
		} else {
			target = r.randomMember()
		}
		if err != nil {
			return err
		}
		n := 1
		if !snapshot && !strings.HasPrefix(name, "compact-") {
			n = 1 + r.rng.IntN(30)
		}
		r.logf("crash point %s on %s at hit %d", name, target.name, n)
		r.c.kill(target)
		target.env = []string{fmt.Sprintf("CAIRN_FAILPOINTS=%s=%d*exit", name, n)}
		err = r.c.restart(target)
		target.env = nil
		if err != nil && target.proc != nil && target.proc.hasExited() && target.proc.exitCode() == failpoint.ExitCode {
			err = nil // it crashed on its way up (a replayed step)
		} else if err != nil {
			return err
		}
		if target.proc != nil && !target.proc.hasExited() {
			// Make the step happen.
			switch {
			case snapshot && r.c.cfg.size > 1:
				r.c.proxy.set(linkFault{reset: true}, isolateLinks(r.c.cfg.size, target.idx)...)
				lead, lerr := r.c.waitLeader(ctx)
				if lerr == nil {
					st := r.c.status(ctx, lead)
					need := st.raftIndex + uint64(r.c.cfg.snapshotCount+r.c.cfg.catchUp) + 10
					waitIndex(ctx, r, lead, need, 30*time.Second)
				}
				r.c.proxy.healAll()
			case strings.HasPrefix(name, "compact-"):
				rev := r.tr.lastRev.Load() - 1
				if rev > 1 {
					cctx, cancel := context.WithTimeout(ctx, opTimeout)
					_, _ = r.c.admin[target.idx-1].Compact(cctx, rev)
					cancel()
				}
			}
			t := time.NewTimer(20 * time.Second)
			select {
			case <-target.proc.exited:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if target.proc.hasExited() {
			if rc := target.proc.exitCode(); rc != failpoint.ExitCode {
				return fmt.Errorf("%s exited with %d, not at the crash point (log %s)", target.name, rc, target.logs[len(target.logs)-1])
			}
			r.crashes++
			r.logf("%s crashed at %s; restarting it clean", target.name, name)
			target.proc = nil
		} else {
			r.logf("crash point %s did not fire on %s within 20s; restarting it clean", name, target.name)
			r.c.kill(target)
		}
		return r.c.restart(target)
	}
}

func waitIndex(ctx context.Context, r *run, m *member, need uint64, d time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if st := r.c.status(wctx, m); st.err == nil && st.raftIndex >= need {
			return
		}
		if pause(wctx, 100*time.Millisecond) != nil {
			return
		}
	}
}

// allFaults is every fault kind, by name.
var allFaults = func() []fault {
	fs := []fault{
		{name: "kill-random", inject: killRestart(pickRandom)},
		{name: "kill-leader", inject: killRestart(pickLeader)},
		{name: "pause-leader", inject: pauseLeader},
		{name: "partition-leader", multi: true, inject: partition("leader")},
		{name: "partition-minority", multi: true, inject: partition("minority")},
		{name: "partition-ring", multi: true, cairnOnly: true, inject: partition("ring")},
		{name: "network-latency", multi: true, inject: networkFault(linkFault{delay: 30 * time.Millisecond, jitter: 60 * time.Millisecond}, "30-90ms latency")},
		{name: "network-drop", multi: true, inject: networkFault(linkFault{drop: 0.02}, "2% of chunks reset their connection")},
		{name: "member-replace", multi: true, inject: memberReplace},
		{name: "snapshot-catchup", multi: true, inject: snapshotCatchUp},
	}
	for _, p := range failpoint.All {
		fs = append(fs, fault{name: "crash-" + p, cairnOnly: true, multi: strings.HasPrefix(p, "snapshot-"), inject: crashPoint(p)})
	}
	return fs
}()

func faultByName(name string) (fault, bool) {
	i := slices.IndexFunc(allFaults, func(f fault) bool { return f.name == name })
	if i < 0 {
		return fault{}, false
	}
	return allFaults[i], true
}

// shuffled returns a random order of fs.
func shuffled(rng *rand.Rand, fs []fault) []fault {
	out := slices.Clone(fs)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
