package mvcc

import "github.com/cockroachdb/pebble/v2"

// WithStateSnapshot runs fn on a Pebble snapshot of the whole state, taken
// while no snapshot installation is replacing it (an installation commits
// in several batches), so fn sees one applied state in full.
func (s *Store) WithStateSnapshot(fn func(pebble.Reader) error) error {
	s.mu.RLock()
	snap := s.db.NewSnapshot()
	s.mu.RUnlock()
	defer snap.Close()
	return fn(snap)
}
