package robustness

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// The porcupine model is one register per key (the history is partitioned
// by key): its value, whether it exists, and its mod revision when known.
// A write whose outcome is unknown may take effect at any point after its
// call (its return time is infinite), and then its revision is unknown
// until a read shows it.
type kvState struct {
	exists bool
	value  string
	modRev int64 // 0: unknown
}

type kvInput struct {
	kind   string // put, get, delete, cas
	value  string // put, cas
	expect string // cas
}

type kvOutput struct {
	unknown   bool
	rev       int64 // header revision
	found     bool
	value     string
	modRev    int64
	deleted   int64
	succeeded bool
}

func stepRead(s kvState, out kvOutput) (bool, kvState) {
	if out.found != s.exists || (out.found && out.value != s.value) {
		return false, s
	}
	if out.found {
		if s.modRev != 0 && out.modRev != s.modRev {
			return false, s
		}
		if out.rev != 0 && out.modRev > out.rev {
			return false, s
		}
		s.modRev = out.modRev
	}
	return true, s
}

func kvStep(state, input, output any) (bool, any) {
	s := state.(kvState)
	in := input.(kvInput)
	out := output.(kvOutput)
	switch in.kind {
	case opPut:
		if out.unknown {
			return true, kvState{exists: true, value: in.value}
		}
		if s.modRev != 0 && out.rev <= s.modRev {
			return false, s
		}
		return true, kvState{exists: true, value: in.value, modRev: out.rev}
	case opGet:
		return stepRead(s, out)
	case opDelete:
		if out.unknown {
			return true, kvState{}
		}
		if (out.deleted == 1) != s.exists || out.deleted > 1 {
			return false, s
		}
		if s.exists && s.modRev != 0 && out.rev <= s.modRev {
			return false, s
		}
		return true, kvState{}
	case opCAS:
		match := s.exists && s.value == in.expect
		if out.unknown {
			if match {
				return true, kvState{exists: true, value: in.value}
			}
			return true, s
		}
		if out.succeeded != match {
			return false, s
		}
		if match {
			if s.modRev != 0 && out.rev <= s.modRev {
				return false, s
			}
			return true, kvState{exists: true, value: in.value, modRev: out.rev}
		}
		return stepRead(s, out)
	}
	return false, s
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Metadata.(string)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: kvStep,
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := ""
		switch {
		case out.unknown:
			res = "unknown"
		case in.kind == opGet || (in.kind == opCAS && !out.succeeded):
			if out.found {
				res = fmt.Sprintf("%q mod %d @%d", out.value, out.modRev, out.rev)
			} else {
				res = fmt.Sprintf("absent @%d", out.rev)
			}
			if in.kind == opCAS {
				res = "failed, " + res
			}
		case in.kind == opDelete:
			res = fmt.Sprintf("deleted %d @%d", out.deleted, out.rev)
		default:
			res = fmt.Sprintf("ok @%d", out.rev)
		}
		switch in.kind {
		case opPut:
			return fmt.Sprintf("put(%q) -> %s", in.value, res)
		case opCAS:
			return fmt.Sprintf("cas(%q -> %q) -> %s", in.expect, in.value, res)
		case opDelete:
			return "delete() -> " + res
		}
		return "get() -> " + res
	},
	DescribeState: func(state any) string {
		s := state.(kvState)
		if !s.exists {
			return "absent"
		}
		if s.modRev == 0 {
			return fmt.Sprintf("%q (mod ?)", s.value)
		}
		return fmt.Sprintf("%q (mod %d)", s.value, s.modRev)
	},
	DescribeOperationMetadata: func(info any) string { return info.(string) },
}

// porcupineOps turns the history into per-key register operations:
// writes that did not fail (unknown ones with an infinite return time),
// successful linearizable gets, and linearizable ranges split into one
// read per key (a range at revision R reads every key at R). Serializable
// reads may be stale by design and are checked against the revision log
// instead.
func porcupineOps(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	add := func(o *Op, key string, in kvInput, res kvOutput) {
		ret := o.Return
		if res.unknown || o.Settled {
			ret = math.MaxInt64
		}
		out = append(out, porcupine.Operation{ClientId: o.Client, Input: in, Call: o.Call, Output: res, Return: ret, Metadata: key})
	}
	for i := range ops {
		o := &ops[i]
		if o.Outcome == Failed {
			continue
		}
		unknown := o.Outcome == Unknown
		switch o.Kind {
		case opPut, opDelete, opCAS:
			add(o, o.Key, kvInput{kind: o.Kind, value: o.Value, expect: o.Expect}, kvOutput{unknown: unknown, rev: o.Rev,
				found: o.Found, value: o.ReadValue, modRev: o.ModRev, deleted: o.Deleted, succeeded: o.Succeeded})
		case opGet:
			if unknown {
				continue
			}
			add(o, o.Key, kvInput{kind: opGet}, kvOutput{rev: o.Rev, found: o.Found, value: o.ReadValue, modRev: o.ModRev})
		case opRange, opFinalRead:
			if unknown {
				continue
			}
			got := map[string]KV{}
			for _, kv := range o.KVs {
				got[kv.Key] = kv
			}
			for k := range numKeys {
				key := kvKey(k)
				kv, found := got[key]
				add(o, key, kvInput{kind: opGet}, kvOutput{rev: o.Rev, found: found, value: kv.Value, modRev: kv.ModRev})
			}
		}
	}
	return out
}

// checkLinearizable runs porcupine with a time bound. A timeout is
// reported as Unknown, not as a violation.
func checkLinearizable(ops []Op, timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	return porcupine.CheckOperationsVerbose(kvModel, porcupineOps(ops), timeout)
}
