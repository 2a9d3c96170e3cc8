package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// save streams a backup of db into a file, as etcdctl stores it.
func save(t testing.TB, db *pebble.DB, chunk int) (string, *Body) {
	t.Helper()
	body, err := NewBody(t.TempDir(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(body.Close)
	var file bytes.Buffer
	last := body.Size()
	err = body.Stream(chunk, func(p []byte, remaining int64) error {
		if len(p) > chunk && len(p) != sha256.Size {
			t.Fatalf("chunk of %d bytes, want at most %d", len(p), chunk)
		}
		if remaining != last-int64(len(p)) {
			t.Fatalf("remaining %d after %d bytes, was %d", remaining, len(p), last)
		}
		last = remaining
		file.Write(p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != 0 || int64(file.Len()) != body.Size() {
		t.Fatalf("streamed %d bytes (remaining %d), Size says %d", file.Len(), last, body.Size())
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, body
}

func TestRoundTrip(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[string]string{}
	set := func(k []byte, v string) {
		if err := db.Set(k, []byte(v), nil); err != nil {
			t.Fatal(err)
		}
		want[string(k)] = v
	}
	for i := range 300 {
		set(append([]byte{schema.MVCC}, binary.BigEndian.AppendUint64(nil, uint64(i))...), string(bytes.Repeat([]byte{'v'}, i)))
	}
	set(append([]byte{schema.Lease}, 1, 2, 3, 4, 5, 6, 7, 8), "lease")
	set(schema.RevisionKey, string(binary.BigEndian.AppendUint64(nil, 301)))
	// Not state: never in a backup.
	if err := db.Set([]byte{schema.RaftLog, 1}, []byte("raft"), nil); err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{7, 512, 32 << 10} {
		path, body := save(t, db, chunk)
		if body.Revision != 301 {
			t.Fatalf("body revision %d, want 301", body.Revision)
		}
		if body.Size()%512 != sha256.Size {
			t.Fatalf("size %d: etcdctl wants 32 more than a multiple of 512", body.Size())
		}
		got := map[string]string{}
		info, err := Read(path, func(k, v []byte) error {
			got[string(k)] = string(v)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || info.Revision != 301 || info.Keys != 300 {
			t.Fatalf("chunk %d: read %d pairs (want %d), info %+v", chunk, len(got), len(want), info)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("chunk %d: %x = %q, want %q", chunk, k, got[k], v)
			}
		}
		// One flipped bit anywhere is refused before anything is used.
		b, _ := os.ReadFile(path)
		b[len(b)/2] ^= 1
		bad := filepath.Join(t.TempDir(), "bad.db")
		_ = os.WriteFile(bad, b, 0o600)
		called := false
		if _, err := Read(bad, func(_, _ []byte) error { called = true; return nil }); !errors.Is(err, ErrNotBackup) || called {
			t.Fatalf("damaged file: err %v, fn called %v", err, called)
		}
	}
}

// FuzzRead: a backup file is untrusted input; reading it never panics,
// whatever its bytes (with or without a valid hash).
func FuzzRead(f *testing.F) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	_ = db.Set([]byte{schema.MVCC, 1}, []byte("v"), nil)
	path, _ := save(f, db, 512)
	good, _ := os.ReadFile(path)
	_ = db.Close()
	f.Add(good[:len(good)-sha256.Size], true)
	f.Add([]byte(magic), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, fixHash bool) {
		if fixHash {
			sum := sha256.Sum256(b)
			b = append(b, sum[:]...)
		}
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = Read(p, func(_, _ []byte) error { return nil })
	})
}
