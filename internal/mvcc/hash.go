package mvcc

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// HashKV returns a hash of the logical key-value history visible between
// the compacted revision and rev (<= 0: the current revision), with the
// revision it covers and the compacted revision.
//
// Members that applied the same log return the same hash whether or not
// their background compaction has physically removed old versions yet:
// for each key the hash covers the versions above the compacted revision
// and the one version at or below it that compaction keeps (a live one, or
// a tombstone exactly at the compacted revision).
func (s *Store) HashKV(rev int64) (hash uint32, hashRev, compactRev int64, err error) {
	v, err := s.View()
	if err != nil {
		return 0, 0, 0, err
	}
	defer v.Close()
	if rev <= 0 {
		rev = v.rev
	}
	if rev > v.rev {
		return 0, 0, 0, ErrFutureRev
	}
	if rev < v.compact {
		return 0, 0, 0, ErrCompacted
	}
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.MVCC}, UpperBound: []byte{schema.MVCC + 1}})
	if err != nil {
		return 0, 0, 0, err
	}
	defer it.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	var cur []byte
	doneWithKey := false
	for valid := it.First(); valid; valid = it.Next() {
		enc, main, sub, err := splitVersionKey(it.Key())
		if err != nil {
			return 0, 0, 0, err
		}
		if !sameKey(it.Key(), cur) {
			cur = append(cur[:0], enc...)
			doneWithKey = false
		}
		if doneWithKey || main > rev {
			continue
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return 0, 0, 0, err
		}
		if main <= v.compact {
			doneWithKey = true
			if len(val) > 0 && val[0] == flagTombstone && main != v.compact {
				continue
			}
		}
		_, _ = h.Write(enc)
		_, _ = h.Write(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(main)), uint64(sub)))
		_, _ = h.Write(val)
	}
	if err := it.Error(); err != nil {
		return 0, 0, 0, err
	}
	return h.Sum32(), rev, v.compact, nil
}
