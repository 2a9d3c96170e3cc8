package mvcc

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Events returns the changes made at revisions [from, to] in revision
// order, read from the revision log, each with the key's previous version
// as PrevKv when prevKV is set and that version still exists. It stops
// after the first revision that brings the count to maxEvents or the size
// of keys and values to maxBytes or more (a revision is never split) and
// returns the last revision it read completely. It fails with ErrCompacted when from is below the compacted
// revision and ErrFutureRev when to is beyond the current one.
func (s *Store) Events(from, to int64, maxEvents, maxBytes int, prevKV bool) ([]*mvccpb.Event, int64, error) {
	s.mu.RLock()
	cur, compact := s.mu.rev, s.mu.compactRev
	snap := s.db.NewSnapshot()
	s.mu.RUnlock()
	defer snap.Close()
	if from < compact {
		return nil, 0, ErrCompacted
	}
	if to > cur {
		return nil, 0, ErrFutureRev
	}
	if from > to {
		return nil, to, nil
	}
	logIt, err := snap.NewIter(&pebble.IterOptions{LowerBound: revLogKey(from, 0), UpperBound: revLogKey(to+1, 0)})
	if err != nil {
		return nil, 0, fmt.Errorf("mvcc: revision log iterator: %w", err)
	}
	defer logIt.Close()
	verIt, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{schema.MVCC}, UpperBound: []byte{schema.MVCC + 1}})
	if err != nil {
		return nil, 0, fmt.Errorf("mvcc: version iterator: %w", err)
	}
	defer verIt.Close()

	var (
		evs       []*mvccpb.Event
		size      int
		at        int64
		stoppedAt int64
		buf       []byte
	)
	for valid := logIt.First(); valid; valid = logIt.Next() {
		main, sub, err := splitRevLogKey(logIt.Key())
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %x", err, logIt.Key())
		}
		if main != at {
			if len(evs) >= maxEvents || size >= maxBytes {
				stoppedAt = main
				break
			}
			at = main
		}
		key, err := logIt.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		buf = versionKey(buf[:0], key, main, sub)
		if !verIt.SeekGE(buf) || string(verIt.Key()) != string(buf) {
			if err := verIt.Error(); err != nil {
				return nil, 0, err
			}
			return nil, 0, fmt.Errorf("mvcc: revision log entry %d.%d names key %q with no version: %w", main, sub, key, errBadRecord)
		}
		val, err := verIt.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		ev, err := eventAt(key, main, val)
		if err != nil {
			return nil, 0, err
		}
		if prevKV {
			if ev.PrevKv, err = olderVersion(verIt, buf[1:len(buf)-revSuffixLen]); err != nil {
				return nil, 0, err
			}
		}
		evs = append(evs, ev)
		size += len(ev.Kv.Key) + len(ev.Kv.Value)
		if ev.PrevKv != nil {
			size += len(ev.PrevKv.Key) + len(ev.PrevKv.Value)
		}
	}
	if err := logIt.Error(); err != nil {
		return nil, 0, err
	}
	if stoppedAt != 0 {
		return evs, stoppedAt - 1, nil
	}
	return evs, to, nil
}

// eventAt builds the event for the version of key stored at main.
func eventAt(key []byte, main int64, val []byte) (*mvccpb.Event, error) {
	r, err := decodeRecord(val, true)
	if err != nil {
		return nil, err
	}
	k := append([]byte(nil), key...)
	if r.tombstone {
		return &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: k, ModRevision: main}}, nil
	}
	kv := &mvccpb.KeyValue{Key: k, CreateRevision: r.create, ModRevision: main, Version: r.version, Lease: r.lease}
	if len(r.value) > 0 {
		kv.Value = append([]byte(nil), r.value...)
	}
	return &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: kv}, nil
}

// olderVersion returns the live version of the key (encoded enc) just older
// than the one it is positioned on, or nil if there is none or it is a
// tombstone. The iterator is left on that older version.
func olderVersion(it *pebble.Iterator, enc []byte) (*mvccpb.KeyValue, error) {
	if !it.Next() || !sameKey(it.Key(), enc) {
		return nil, it.Error()
	}
	_, main, _, err := splitVersionKey(it.Key())
	if err != nil {
		return nil, err
	}
	val, err := it.ValueAndErr()
	if err != nil {
		return nil, err
	}
	return toKV(enc, main, val, true)
}
