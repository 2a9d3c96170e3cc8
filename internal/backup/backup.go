// Package backup owns Cairn's backup file: what Maintenance.Snapshot
// streams (`etcdctl snapshot save`) and `cairnctl snapshot restore` reads.
//
// The file is the replicated state in the snapshot package's pair stream,
// framed so that etcdctl accepts it: etcdctl checks only that a saved
// snapshot's length is 32 more than a multiple of 512 (a bbolt file and its
// sha256), so the body is zero-padded to a multiple of 512 and followed by
// the sha256 of everything before it:
//
//	"CAIRNBK1" | body length (8 B, big endian) | body | zeros | sha256
//
// It never writes a data dir itself (package member restores one), and it
// never trusts a file: every decode checks the hash first and the framing
// after.
package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cairnkv/cairn/internal/snapshot"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

const magic = "CAIRNBK1"

// headerLen is the magic and the body length.
const headerLen = len(magic) + 8

// ErrNotBackup is returned for a file that is not a Cairn backup (or was
// damaged).
var ErrNotBackup = errors.New("backup: not a Cairn backup file, or damaged")

// Body is a backup's pair stream written to a temporary file, ready to be
// streamed with its framing.
type Body struct {
	f        *os.File
	size     int64
	Revision int64
}

// NewBody writes the replicated state of r (a Pebble snapshot) to a
// temporary file in dir. Close removes it.
func NewBody(dir string, r pebble.Reader) (*Body, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "backup-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	b := &Body{f: f}
	if err := snapshot.Write(f, r); err != nil {
		b.Close()
		return nil, fmt.Errorf("backup: write state: %w", err)
	}
	if b.size, err = f.Seek(0, io.SeekCurrent); err != nil {
		b.Close()
		return nil, err
	}
	v, closer, err := r.Get(schema.RevisionKey)
	switch {
	case err == nil:
		if len(v) == 8 {
			b.Revision = int64(binary.BigEndian.Uint64(v))
		}
		closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		b.Close()
		return nil, err
	}
	return b, nil
}

// Size is the length of the whole backup file.
func (b *Body) Size() int64 {
	return int64(headerLen) + b.size + pad(b.size) + sha256.Size
}

func pad(body int64) int64 {
	return (512 - (int64(headerLen)+body)%512) % 512
}

// Stream sends the whole backup file in chunks of at most chunk bytes;
// remaining is what is left after each.
func (b *Body) Stream(chunk int, send func(p []byte, remaining int64) error) error {
	if _, err := b.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := sha256.New()
	remaining := b.Size()
	hdr := binary.BigEndian.AppendUint64([]byte(magic), uint64(b.size))
	r := io.MultiReader(bytes.NewReader(hdr), io.LimitReader(b.f, b.size), io.LimitReader(zeros{}, pad(b.size)))
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			h.Write(buf[:n])
			remaining -= int64(n)
			if serr := send(buf[:n], remaining); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	return send(h.Sum(nil), remaining-sha256.Size)
}

// Close removes the temporary file.
func (b *Body) Close() {
	name := b.f.Name()
	_ = b.f.Close()
	_ = os.Remove(name)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Info is what a backup file says about itself.
type Info struct {
	Revision int64
	Keys     int // pairs in the MVCC keyspace (versions, not user keys)
	Pairs    int
	Size     int64
	SHA256   [sha256.Size]byte
}

// Read checks the backup file at path and calls fn for each pair of its
// state, in the order written.
func Read(path string, fn func(k, v []byte) error) (Info, error) {
	var info Info
	f, err := os.Open(path)
	if err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return info, err
	}
	info.Size = st.Size()
	if info.Size < int64(headerLen)+sha256.Size || (info.Size-sha256.Size)%512 != 0 {
		return info, fmt.Errorf("%w: %s has %d bytes", ErrNotBackup, path, info.Size)
	}
	// The hash first: nothing of a damaged file is used.
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, info.Size-sha256.Size)); err != nil {
		return info, err
	}
	if _, err := io.ReadFull(f, info.SHA256[:]); err != nil {
		return info, err
	}
	if !bytes.Equal(h.Sum(nil), info.SHA256[:]) {
		return info, fmt.Errorf("%w: %s: sha256 mismatch", ErrNotBackup, path)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return info, err
	}
	return info, decode(bufio.NewReader(io.LimitReader(f, info.Size-sha256.Size)), &info, fn)
}

func decode(r io.Reader, info *Info, fn func(k, v []byte) error) error {
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(r, hdr); err != nil || string(hdr[:len(magic)]) != magic {
		return fmt.Errorf("%w: no %s header", ErrNotBackup, magic)
	}
	size := binary.BigEndian.Uint64(hdr[len(magic):])
	if int64(size) < 0 || int64(size) > info.Size-int64(headerLen)-sha256.Size {
		return fmt.Errorf("%w: body of %d bytes in a file of %d", ErrNotBackup, size, info.Size)
	}
	err := snapshot.Read(io.LimitReader(r, int64(size)), func(k, v []byte) error {
		info.Pairs++
		switch {
		case k[0] == schema.MVCC:
			info.Keys++
		case bytes.Equal(k, schema.RevisionKey) && len(v) == 8:
			info.Revision = int64(binary.BigEndian.Uint64(v))
		}
		return fn(k, v)
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotBackup, err)
	}
	return nil
}
