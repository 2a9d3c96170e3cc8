// Package failpoint owns Cairn's crash points: named places on the
// durability path (raft log sync, apply batch commit, snapshot install,
// compaction) where a robustness test can make the server crash, panic or
// stall. It must never change what the server does when CAIRN_FAILPOINTS
// is unset: Hit is then one load of a package variable and a branch, and
// no other code path reads or writes anything here.
//
// The registry is package-level state, read once from the environment at
// process start. That is deliberate: the call sites sit in four packages
// (raftnode, apply, member, mvcc) deep inside hot loops, and threading a
// registry through every constructor would touch every config struct for a
// test-only feature. A process-wide, read-once, env-only registry keeps
// the call sites to one line each and cannot be switched on by a client.
//
// CAIRN_FAILPOINTS is a comma-separated list of name=action terms:
//
//	raft-before-sync=exit        exit at the first hit
//	raft-after-sync=3*exit       exit at the third hit
//	apply-after-commit=panic     panic at the first hit
//	compact-after-batch=sleep(200ms)  sleep at every hit
//
// "exit" ends the process at once with ExitCode, without running deferred
// functions or closing the database: a crash as far as the data directory
// can tell (the page cache is not dropped; see docs/robustness.md).
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EnvVar names the environment variable read at process start.
const EnvVar = "CAIRN_FAILPOINTS"

// ExitCode is the status of a process that a failpoint ended with "exit".
const ExitCode = 86

// Names of the crash points Cairn has, for tests and documentation.
const (
	RaftBeforeSync      = "raft-before-sync"      // raftnode: before a Ready's entries and HardState are persisted
	RaftAfterSync       = "raft-after-sync"       // raftnode: after they are persisted, before messages and apply
	ApplyBeforeCommit   = "apply-before-commit"   // apply: before an apply batch is committed
	ApplyAfterCommit    = "apply-after-commit"    // apply: after an apply batch is committed (NoSync)
	SnapshotAfterMarker = "snapshot-after-marker" // member: snapshot install marker synced, state not replaced yet
	SnapshotAfterState  = "snapshot-after-state"  // member: state replaced, raft log not moved yet
	SnapshotAfterLog    = "snapshot-after-log"    // member: raft log moved, marker not cleared yet
	CompactAfterBatch   = "compact-after-batch"   // mvcc: after one compaction batch is committed
	CompactBeforeFinish = "compact-before-finish" // mvcc: all batches done, finished-compaction record not written
)

// All lists every crash point.
var All = []string{
	RaftBeforeSync, RaftAfterSync, ApplyBeforeCommit, ApplyAfterCommit,
	SnapshotAfterMarker, SnapshotAfterState, SnapshotAfterLog,
	CompactAfterBatch, CompactBeforeFinish,
}

type kind int

const (
	kindExit kind = iota
	kindPanic
	kindSleep
)

type point struct {
	kind  kind
	after int           // fire at this hit (1-based); 0 fires at every hit (sleep)
	sleep time.Duration // kindSleep
	mu    sync.Mutex
	hits  int
}

// enabled is false unless CAIRN_FAILPOINTS named at least one point: the
// only thing Hit reads in a normal process.
var (
	enabled bool
	points  map[string]*point
)

func init() {
	spec := os.Getenv(EnvVar)
	if spec == "" {
		return
	}
	ps, err := parse(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn: %s: %v\n", EnvVar, err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "cairn: failpoints enabled: %s\n", spec)
	points, enabled = ps, len(ps) > 0
}

// parse parses a CAIRN_FAILPOINTS value.
func parse(spec string) (map[string]*point, error) {
	ps := map[string]*point{}
	for term := range strings.SplitSeq(spec, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		name, action, ok := strings.Cut(term, "=")
		if !ok {
			return nil, fmt.Errorf("term %q: want name=action", term)
		}
		p := &point{after: 1}
		if n, rest, ok := strings.Cut(action, "*"); ok {
			k, err := strconv.Atoi(n)
			if err != nil || k < 1 {
				return nil, fmt.Errorf("term %q: count %q must be a positive integer", term, n)
			}
			p.after, action = k, rest
		}
		switch {
		case action == "exit":
			p.kind = kindExit
		case action == "panic":
			p.kind = kindPanic
		case strings.HasPrefix(action, "sleep(") && strings.HasSuffix(action, ")"):
			d, err := time.ParseDuration(action[len("sleep(") : len(action)-1])
			if err != nil {
				return nil, fmt.Errorf("term %q: %w", term, err)
			}
			p.kind, p.sleep = kindSleep, d
			if !strings.Contains(term, "*") {
				p.after = 0
			}
		default:
			return nil, fmt.Errorf("term %q: unknown action %q (exit, panic, sleep(d))", term, action)
		}
		ps[strings.TrimSpace(name)] = p
	}
	return ps, nil
}

// Hit marks that the process reached the named crash point, and carries
// out its action if CAIRN_FAILPOINTS enabled it.
func Hit(name string) {
	if !enabled {
		return
	}
	p := points[name]
	if p == nil {
		return
	}
	p.fire(name)
}

func (p *point) fire(name string) {
	p.mu.Lock()
	p.hits++
	fire := p.after == 0 || p.hits == p.after
	p.mu.Unlock()
	if !fire {
		return
	}
	switch p.kind {
	case kindExit:
		fmt.Fprintf(os.Stderr, "cairn: failpoint %s: exit %d\n", name, ExitCode)
		os.Exit(ExitCode)
	case kindPanic:
		panic("failpoint " + name)
	case kindSleep:
		time.Sleep(p.sleep)
	}
}
