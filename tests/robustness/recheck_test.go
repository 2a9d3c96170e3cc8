package robustness

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestRecheck re-runs the history checks on the evidence a failed run
// kept: ROBUSTNESS_RECHECK=/tmp/cairn-robustness-<run>-<n> go test -run
// TestRecheck -v ./tests/robustness/ (to check a checker fix, or to look
// at a violation again without the cluster).
func TestRecheck(t *testing.T) {
	dir := os.Getenv("ROBUSTNESS_RECHECK")
	if dir == "" {
		t.Skip("set ROBUSTNESS_RECHECK to a kept run directory")
	}
	ops, err := loadOps(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var sessions []*watchSession
	if b, err := os.ReadFile(filepath.Join(dir, "watch.json")); err == nil {
		if err := json.Unmarshal(b, &sessions); err != nil {
			t.Fatal(err)
		}
	}
	var finalRev int64
	for i := range ops {
		o := &ops[i]
		if o.Kind == opFinalRead && o.Outcome == OK {
			finalRev = o.Rev
		}
		// Undo an earlier settling: settle again with this checker.
		if i := strings.Index(o.Err, " (settled:"); i >= 0 {
			o.Err, o.Outcome, o.Settled, o.Succeeded = o.Err[:i], Unknown, false, false
			o.Rev = 0
		}
	}
	var out []string
	wv, log := checkWatches(sessions, ops)
	out = append(out, wv...)
	t.Logf("settled %d unknown writes; revision log complete to %d (final %d)", resolveUnknown(ops, log, finalRev), log.upTo, finalRev)
	out = append(out, checkRevisionOrder(ops)...)
	out = append(out, checkLostWrites(ops)...)
	out = append(out, checkReadsAgainstLog(ops, log)...)
	res, info := checkLinearizable(ops, 5*time.Minute)
	if res == porcupine.Illegal {
		out = append(out, "porcupine: not linearizable")
		if err := porcupine.VisualizePath(kvModel, info, filepath.Join(dir, "linearizability-recheck.html")); err != nil {
			t.Log(err)
		}
	}
	t.Logf("%d operations, porcupine %s", len(ops), res)
	for _, v := range out {
		t.Errorf("violation: %s", v)
	}
}

func loadOps(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []Op
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var o Op
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return nil, err
		}
		ops = append(ops, o)
	}
	return ops, sc.Err()
}
