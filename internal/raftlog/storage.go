// Package raftlog implements raft.Storage on the member's Pebble database:
// the raft log entries, the HardState and the snapshot point (the index and
// term the log was compacted to, with its ConfState).
//
// Ownership: the raft goroutine appends (Save) and compacts; raft itself
// reads through the raft.Storage methods from the same goroutine; other
// goroutines (metrics, snapshot senders) may read. A mutex makes all of it
// safe. The terms of the log are kept in memory (8 bytes per entry), and so
// are the most recently saved entries (a bounded tail): raft reads every
// committed entry back once to apply it, and serving that from memory
// spares a Pebble iterator per Ready. Older entries (a follower far
// behind) are read from Pebble.
package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Storage is a raft.Storage backed by Pebble.
type Storage struct {
	db *pebble.DB
	// snapshotFn, when set, produces the snapshot raft sends to a follower
	// that is behind the compacted log: the member's applied state.
	snapshotFn func() (*raftpb.Snapshot, error)

	mu        sync.Mutex
	hardState *raftpb.HardState
	confState *raftpb.ConfState
	snapIndex uint64 // entries <= snapIndex are compacted away
	snapTerm  uint64
	terms     []uint64 // terms[i] is the term of entry snapIndex+1+i
	// tail holds the last saved entries, contiguous and ending at the last
	// index; tailBytes is their size.
	tail      []*raftpb.Entry
	tailBytes int
}

// Bounds of the in-memory tail of the log.
const (
	tailMaxEntries = 4096
	// A few Readies' worth: entries are read back to be applied right
	// after they are saved. Entries that carry merged proposals are big
	// (up to 256 KiB), and every byte held here is multiplied by GOGC in
	// the heap target.
	tailMaxBytes = 4 << 20
)

var _ raft.Storage = (*Storage)(nil)

// Open loads the raft state from db.
func Open(db *pebble.DB) (*Storage, error) {
	s := &Storage{db: db, hardState: &raftpb.HardState{}, confState: &raftpb.ConfState{}}
	if err := getProto(db, schema.HardStateKey, s.hardState); err != nil {
		return nil, err
	}
	if err := getProto(db, schema.ConfStateKey, s.confState); err != nil {
		return nil, err
	}
	if v, closer, err := db.Get(schema.CommitHintKey); err == nil {
		if len(v) != 8 {
			closer.Close()
			return nil, fmt.Errorf("raftlog: commit hint record is corrupt (%d bytes, want 8)", len(v))
		}
		if binary.BigEndian.Uint64(v) > s.hardState.GetCommit() {
			s.hardState.Commit = proto.Uint64(binary.BigEndian.Uint64(v))
		}
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, err
	}
	meta := &raftpb.SnapshotMetadata{}
	if err := getProto(db, schema.SnapshotMetaKey, meta); err != nil {
		return nil, err
	}
	s.snapIndex, s.snapTerm = meta.GetIndex(), meta.GetTerm()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: entryKey(s.snapIndex + 1), UpperBound: []byte{schema.RaftLog + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	next := s.snapIndex + 1
	for valid := it.First(); valid; valid = it.Next() {
		if len(it.Key()) != 9 {
			return nil, fmt.Errorf("raftlog: log key %x is corrupt (%d bytes, want 9)", it.Key(), len(it.Key()))
		}
		idx := binary.BigEndian.Uint64(it.Key()[1:])
		if idx != next {
			return nil, fmt.Errorf("raftlog: log has a gap: expected index %d, found %d", next, idx)
		}
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(it.Value(), e); err != nil {
			return nil, fmt.Errorf("raftlog: entry %d is corrupt: %w", idx, err)
		}
		s.terms = append(s.terms, e.GetTerm())
		next++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if c := s.hardState.GetCommit(); c > s.lastIndexLocked() {
		return nil, fmt.Errorf("raftlog: HardState commit %d is beyond the last log index %d", c, s.lastIndexLocked())
	}
	return s, nil
}

func getProto(r pebble.Reader, key []byte, m proto.Message) error {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("raftlog: %q is corrupt: %w", key, err)
	}
	return nil
}

func entryKey(i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{schema.RaftLog}, i)
}

// InitialState implements raft.Storage.
func (s *Storage) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.Clone(s.hardState).(*raftpb.HardState), proto.Clone(s.confState).(*raftpb.ConfState), nil
}

// Entries implements raft.Storage.
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	s.mu.Lock()
	first, last := s.snapIndex+1, s.lastIndexLocked()
	if lo < first {
		s.mu.Unlock()
		return nil, raft.ErrCompacted
	}
	if hi > last+1 {
		s.mu.Unlock()
		return nil, fmt.Errorf("raftlog: entries [%d, %d) beyond last index %d: %w", lo, hi, last, raft.ErrUnavailable)
	}
	if ents := s.fromTailLocked(lo, hi, maxSize); ents != nil {
		s.mu.Unlock()
		return ents, nil
	}
	s.mu.Unlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(lo), UpperBound: entryKey(hi)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var ents []*raftpb.Entry
	var size uint64
	want := lo
	for valid := it.First(); valid; valid = it.Next() {
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(it.Value(), e); err != nil {
			return nil, fmt.Errorf("raftlog: entry %x is corrupt: %w", it.Key(), err)
		}
		if e.GetIndex() != want {
			// Compacted concurrently.
			return nil, raft.ErrCompacted
		}
		size += uint64(proto.Size(e))
		if len(ents) > 0 && size > maxSize {
			break
		}
		ents = append(ents, e)
		want++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(ents) == 0 && lo < hi {
		return nil, raft.ErrCompacted
	}
	return ents, nil
}

// fromTailLocked returns entries [lo, hi) (at least one, then up to
// maxSize bytes) if the tail holds lo, else nil. Entries are immutable once
// saved, so they are shared, not copied.
func (s *Storage) fromTailLocked(lo, hi, maxSize uint64) []*raftpb.Entry {
	if len(s.tail) == 0 || lo < s.tail[0].GetIndex() || lo >= hi {
		return nil
	}
	start := lo - s.tail[0].GetIndex()
	n := hi - lo
	var size uint64
	out := make([]*raftpb.Entry, 0, min(n, 64))
	for _, e := range s.tail[start : start+n] {
		size += uint64(proto.Size(e))
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, e)
	}
	return out
}

// appendTailLocked records ents (which follow or overwrite the tail) and
// trims the tail to its bounds.
func (s *Storage) appendTailLocked(ents []*raftpb.Entry) {
	first := ents[0].GetIndex()
	if len(s.tail) > 0 {
		t0 := s.tail[0].GetIndex()
		switch {
		case first <= t0:
			s.tail, s.tailBytes = s.tail[:0], 0
		case first <= t0+uint64(len(s.tail)):
			for _, e := range s.tail[first-t0:] {
				s.tailBytes -= proto.Size(e)
			}
			clear(s.tail[first-t0:])
			s.tail = s.tail[:first-t0]
		default:
			s.tail, s.tailBytes = s.tail[:0], 0 // not contiguous: start over
		}
	}
	for _, e := range ents {
		s.tail = append(s.tail, e)
		s.tailBytes += proto.Size(e)
	}
	s.trimTailLocked(0)
}

// trimTailLocked drops tail entries at or below index and, once the tail
// is over a bound, the oldest down to three quarters of it: the copy below
// then happens once per thousand appends, not on every append (at one
// client every append copied 4,095 pointers into a new slice that the next
// append grew again: 83 KiB allocated per entry).
func (s *Storage) trimTailLocked(index uint64) {
	drop := 0
	for drop < len(s.tail) && s.tail[drop].GetIndex() <= index {
		s.tailBytes -= proto.Size(s.tail[drop])
		drop++
	}
	if len(s.tail)-drop > tailMaxEntries || s.tailBytes > tailMaxBytes {
		for drop < len(s.tail) && (len(s.tail)-drop > tailMaxEntries*3/4 || s.tailBytes > tailMaxBytes*3/4) {
			s.tailBytes -= proto.Size(s.tail[drop])
			drop++
		}
	}
	if drop > 0 {
		// Copy so the dropped entries' backing array can be freed.
		s.tail = append([]*raftpb.Entry(nil), s.tail[drop:]...)
	}
}

// Term implements raft.Storage.
func (s *Storage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i == s.snapIndex {
		return s.snapTerm, nil
	}
	if i < s.snapIndex {
		return 0, raft.ErrCompacted
	}
	if i > s.lastIndexLocked() {
		return 0, raft.ErrUnavailable
	}
	return s.terms[i-s.snapIndex-1], nil
}

// LastIndex implements raft.Storage.
func (s *Storage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastIndexLocked(), nil
}

func (s *Storage) lastIndexLocked() uint64 { return s.snapIndex + uint64(len(s.terms)) }

// FirstIndex implements raft.Storage.
func (s *Storage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapIndex + 1, nil
}

// Snapshot implements raft.Storage. Cairn's state machine is the Pebble DB
// itself; the snapshot returned here is only the point the log was compacted
// to. Shipping the state to a follower is done by the transport from a Pebble
// snapshot (see package transport).
func (s *Storage) Snapshot() (*raftpb.Snapshot, error) {
	if s.snapshotFn != nil {
		return s.snapshotFn()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index:     proto.Uint64(s.snapIndex),
		Term:      proto.Uint64(s.snapTerm),
		ConfState: proto.Clone(s.confState).(*raftpb.ConfState),
	}}, nil
}

// Save durably persists a Ready's HardState and entries in ONE Pebble batch.
// When writing entry i, every previously persisted entry with index >= i is
// discarded (raft may overwrite an uncommitted suffix). sync must be the
// Ready's MustSync.
func (s *Storage) Save(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	if raft.IsEmptyHardState(hs) && len(ents) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	s.mu.Lock()
	last := s.lastIndexLocked()
	s.mu.Unlock()
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		if first <= s.snapIndex {
			return fmt.Errorf("raftlog: append at %d below compacted index %d", first, s.snapIndex)
		}
		if first > last+1 {
			return fmt.Errorf("raftlog: append at %d leaves a gap after last index %d", first, last)
		}
		if first <= last {
			if err := b.DeleteRange(entryKey(first), entryKey(last+1), nil); err != nil {
				return err
			}
		}
		buf := make([]byte, 0, 256)
		for _, e := range ents {
			var err error
			buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], e)
			if err != nil {
				return err
			}
			if err := b.Set(entryKey(e.GetIndex()), buf, nil); err != nil {
				return err
			}
		}
	}
	if !raft.IsEmptyHardState(hs) {
		data, err := proto.Marshal(hs)
		if err != nil {
			return err
		}
		if err := b.Set(schema.HardStateKey, data, nil); err != nil {
			return err
		}
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("raftlog: persist: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ents) > 0 {
		keep := ents[0].GetIndex() - s.snapIndex - 1
		s.terms = s.terms[:keep]
		for _, e := range ents {
			s.terms = append(s.terms, e.GetTerm())
		}
		s.appendTailLocked(ents)
	}
	if !raft.IsEmptyHardState(hs) {
		s.hardState = proto.Clone(hs).(*raftpb.HardState)
	}
	return nil
}

// SetConfState stages cs into the applier's batch b and records it for
// InitialState once b is committed (the caller calls it after commit via
// the returned function).
func (s *Storage) SetConfState(b *pebble.Batch, cs *raftpb.ConfState) (func(), error) {
	data, err := proto.Marshal(cs)
	if err != nil {
		return nil, err
	}
	if err := b.Set(schema.ConfStateKey, data, nil); err != nil {
		return nil, err
	}
	cs = proto.Clone(cs).(*raftpb.ConfState)
	return func() {
		s.mu.Lock()
		s.confState = cs
		s.mu.Unlock()
	}, nil
}

// Compact discards log entries up to and including index, which must be
// applied. term is the term of that entry.
func (s *Storage) Compact(index uint64) error {
	s.mu.Lock()
	if index <= s.snapIndex {
		s.mu.Unlock()
		return nil
	}
	if index > s.lastIndexLocked() {
		s.mu.Unlock()
		return fmt.Errorf("raftlog: compact %d beyond last index %d", index, s.lastIndexLocked())
	}
	term := s.terms[index-s.snapIndex-1]
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term), ConfState: s.confState}
	oldSnap := s.snapIndex
	s.mu.Unlock()
	data, err := proto.Marshal(meta)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(schema.SnapshotMetaKey, data, nil); err != nil {
		return err
	}
	if err := b.DeleteRange(entryKey(oldSnap+1), entryKey(index+1), nil); err != nil {
		return err
	}
	// NoSync: losing this on a crash only leaves extra log entries behind.
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.terms = append([]uint64(nil), s.terms[index-s.snapIndex:]...)
	s.snapIndex, s.snapTerm = index, term
	s.trimTailLocked(index)
	return nil
}

// SetSnapshotFunc sets the function that produces snapshots for raft. Call
// before raft starts.
func (s *Storage) SetSnapshotFunc(fn func() (*raftpb.Snapshot, error)) { s.snapshotFn = fn }

// ApplySnapshot moves the log to a snapshot the applier has installed: every
// entry is discarded and the log restarts after meta's index, durably.
func (s *Storage) ApplySnapshot(meta *raftpb.SnapshotMetadata) error {
	data, err := proto.Marshal(meta)
	if err != nil {
		return err
	}
	cs, err := proto.Marshal(meta.GetConfState())
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange([]byte{schema.RaftLog}, []byte{schema.RaftLog + 1}, nil); err != nil {
		return err
	}
	if err := b.Set(schema.SnapshotMetaKey, data, nil); err != nil {
		return err
	}
	if err := b.Set(schema.ConfStateKey, cs, nil); err != nil {
		return err
	}
	s.mu.Lock()
	hs := proto.Clone(s.hardState).(*raftpb.HardState)
	s.mu.Unlock()
	if hs.GetCommit() < meta.GetIndex() {
		hs.Commit = proto.Uint64(meta.GetIndex())
		if hs.GetTerm() < meta.GetTerm() {
			hs.Term = proto.Uint64(meta.GetTerm())
		}
		hd, err := proto.Marshal(hs)
		if err != nil {
			return err
		}
		if err := b.Set(schema.HardStateKey, hd, nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: apply snapshot %d: %w", meta.GetIndex(), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snapIndex, s.snapTerm = meta.GetIndex(), meta.GetTerm()
	s.terms = nil
	s.tail, s.tailBytes = nil, 0
	s.confState = proto.Clone(meta.GetConfState()).(*raftpb.ConfState)
	s.hardState = hs
	return nil
}

// StageCommit records a commit index in the applier's batch b (see
// schema.CommitHintKey). Raft does not need the commit index to be durable
// at once, so a Ready that only moves it costs no Pebble commit of its own.
func StageCommit(b *pebble.Batch, commit uint64) error {
	return b.Set(schema.CommitHintKey, binary.BigEndian.AppendUint64(nil, commit), nil)
}
