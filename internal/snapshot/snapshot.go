// Package snapshot owns the format and the installation of a member's
// state-machine snapshot: the MVCC, revision-log and meta keyspaces of a
// Pebble snapshot, written as a stream of length-prefixed key/value pairs,
// and read back into a member's database when a follower catches up.
//
// The raft log and raft state are never part of a snapshot, and neither is
// the receiving member's own identity (its local member ID key).
//
// Installation is crash safe: a marker naming the snapshot file is synced
// before the state is replaced and removed (synced) after the raft storage
// has moved to the snapshot. A member that finds the marker at start redoes
// the whole installation from the file before anything reads its state.
package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// LocalKeys are Meta keys that describe the member itself, not the
// replicated state: they are neither sent nor overwritten.
var LocalKeys = [][]byte{schema.FormatKey, {schema.Meta, 's', 'e', 'l', 'f'}, InstallMarkerKey}

// InstallMarkerKey records (synced) the index of a snapshot being installed.
var InstallMarkerKey = []byte{schema.Meta, 'i', 'n', 's', 't', 'a', 'l', 'l'}

// stateSpans are the keyspaces that make up the replicated state.
var stateSpans = [][2][]byte{
	{{schema.MVCC}, {schema.MVCC + 1}},
	{{schema.RevLog}, {schema.RevLog + 1}},
	{{schema.Meta}, {schema.Meta + 1}},
	{{schema.Lease}, {schema.Lease + 1}},
	{{schema.LeaseKey}, {schema.LeaseKey + 1}},
}

// maxItem bounds one key or value in a stream, so a corrupt length cannot
// make the reader allocate without limit.
const maxItem = 64 << 20

var errCorrupt = errors.New("snapshot: corrupt stream")

func isLocal(k []byte) bool {
	for _, l := range LocalKeys {
		if bytes.Equal(k, l) {
			return true
		}
	}
	return false
}

// Write streams the replicated state of r (a Pebble snapshot) to w.
func Write(w io.Writer, r pebble.Reader) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var hdr []byte
	for _, span := range stateSpans {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: span[0], UpperBound: span[1]})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			if isLocal(it.Key()) {
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			hdr = binary.AppendUvarint(hdr[:0], uint64(len(it.Key())))
			hdr = binary.AppendUvarint(hdr, uint64(len(v)))
			if _, err := bw.Write(hdr); err != nil {
				it.Close()
				return err
			}
			if _, err := bw.Write(it.Key()); err != nil {
				it.Close()
				return err
			}
			if _, err := bw.Write(v); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Read calls fn for every pair in a stream written by Write. It never
// panics on corrupt input; it returns errCorrupt.
func Read(r io.Reader, fn func(k, v []byte) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var buf []byte
	for {
		kl, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errCorrupt, err)
		}
		vl, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", errCorrupt, err)
		}
		if kl == 0 || kl > maxItem || vl > maxItem {
			return fmt.Errorf("%w: item of %d+%d bytes", errCorrupt, kl, vl)
		}
		if need := int(kl + vl); cap(buf) < need {
			buf = make([]byte, need)
		}
		buf = buf[:kl+vl]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("%w: %v", errCorrupt, err)
		}
		k, v := buf[:kl], buf[kl:]
		if k[0] != schema.MVCC && k[0] != schema.RevLog && k[0] != schema.Meta && k[0] != schema.Lease && k[0] != schema.LeaseKey {
			return fmt.Errorf("%w: key %x outside the state keyspaces", errCorrupt, k)
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
}

// Dir is where received snapshot files live, inside the data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "snap") }

// Path is the file of the snapshot at index.
func Path(dataDir string, index uint64) string {
	return filepath.Join(Dir(dataDir), strconv.FormatUint(index, 10)+".snap")
}

// Save writes r durably to the snapshot file for index (temp file, fsync,
// rename, fsync dir), so a MsgSnap is handed to raft only once its data is
// safe.
func Save(dataDir string, index uint64, r io.Reader) error {
	dir := Dir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "incoming-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot: receive %d: %w", index, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), Path(dataDir, index)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Install replaces the replicated state in db with the snapshot file at
// index. The caller has already synced InstallMarkerKey; it clears it after
// moving the raft storage to the snapshot.
func Install(db *pebble.DB, dataDir string, index uint64) error {
	f, err := os.Open(Path(dataDir, index))
	if err != nil {
		return fmt.Errorf("snapshot: open %d: %w", index, err)
	}
	defer f.Close()
	b := db.NewBatch()
	for _, span := range stateSpans {
		if err := b.DeleteRange(span[0], span[1], nil); err != nil {
			return err
		}
	}
	// Keep the member's own keys: re-set them after the range delete.
	for _, k := range LocalKeys {
		v, closer, err := db.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		err = b.Set(k, v, nil)
		closer.Close()
		if err != nil {
			return err
		}
	}
	err = Read(f, func(k, v []byte) error {
		if isLocal(k) {
			return nil
		}
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
		if b.Len() > 16<<20 {
			err := b.Commit(pebble.NoSync)
			b.Close()
			b = db.NewBatch()
			if err != nil {
				return err
			}
		}
		return nil
	})
	defer b.Close()
	if err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// Remove deletes snapshot files below keep.
func Remove(dataDir string, keep uint64) {
	ents, err := os.ReadDir(Dir(dataDir))
	if err != nil {
		return
	}
	for _, e := range ents {
		var idx uint64
		if _, err := fmt.Sscanf(e.Name(), "%d.snap", &idx); err == nil && idx < keep {
			_ = os.Remove(filepath.Join(Dir(dataDir), e.Name()))
		}
	}
}
