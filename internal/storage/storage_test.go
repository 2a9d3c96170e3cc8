package storage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOpenFreshAndReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	db, err = Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
}

// A data dir that is not Cairn's (an etcd member dir, say) must be refused
// with a message naming the file, never opened or overwritten.
func TestOpenRefusesForeignDir(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "member", "snap"), 0o700))
	_, err := Open(nil, dir)
	require.ErrorIs(t, err, ErrForeignDataDir)
	require.ErrorContains(t, err, filepath.Join(dir, "member"))
}

func TestOpenRefusesCorruptManifest(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(nil, dir)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		if len(e.Name()) > 9 && e.Name()[:9] == "MANIFEST-" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), []byte("garbage garbage garbage"), 0o600))
		}
	}
	_, err = Open(nil, dir)
	require.Error(t, err)
}
