package member

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/backup"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/membership"
	"github.com/cairnkv/cairn/internal/raftlog"
	"github.com/cairnkv/cairn/internal/snapshot"
	"github.com/cairnkv/cairn/internal/storage"
	"github.com/cairnkv/cairn/internal/storage/schema"
)

// Backup writes this member's applied state to a backup body (for
// Maintenance.Snapshot). The caller streams it and closes it.
func (m *Member) Backup() (*backup.Body, error) {
	var body *backup.Body
	err := m.store.WithStateSnapshot(func(r pebble.Reader) error {
		var err error
		body, err = backup.NewBody(snapshot.Dir(m.cfg.DataDir), r)
		return err
	})
	return body, err
}

// restoredMeta are the Meta keys of a backup that belong to the restored
// state; the rest (the old cluster's identity, members and applied index)
// is made anew.
var restoredMeta = [][]byte{schema.RevisionKey, schema.ScheduledCompactKey, schema.FinishedCompactKey}

// Restore makes cfg.DataDir, which must not exist or be empty, the data dir
// of member cfg.Name of a new cluster (cfg.InitialCluster,
// cfg.InitialClusterToken) whose state is the backup at path. Every member
// of the new cluster is restored from the same file with its own --name;
// they start with the state at the backup's revision, at raft index 1.
func Restore(lg *zap.Logger, cfg config.Server, path string) (backup.Info, error) {
	var info backup.Info
	if lg == nil {
		lg = zap.NewNop()
	}
	members, self, err := initialMembers(cfg)
	if err != nil {
		return info, err
	}
	ids := make([]uint64, 0, len(members))
	for _, mem := range members {
		ids = append(ids, mem.ID)
	}
	if entries, err := os.ReadDir(cfg.DataDir); err == nil && len(entries) > 0 {
		return info, fmt.Errorf("member: data dir %s exists and is not empty; restore into a new one", cfg.DataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return info, err
	}
	db, err := storage.Open(lg, cfg.DataDir)
	if err != nil {
		return info, err
	}
	ok := false
	defer func() {
		if cerr := db.Close(); cerr != nil && ok {
			lg.Warn("closing the restored data dir", zap.Error(cerr))
		}
		if !ok {
			_ = os.RemoveAll(cfg.DataDir) // nothing half-restored is left to start
		}
	}()

	b := db.NewBatch()
	defer func() { b.Close() }()
	info, err = backup.Read(path, func(k, v []byte) error {
		if k[0] == schema.Meta && !slices.ContainsFunc(restoredMeta, func(m []byte) bool { return string(m) == string(k) }) {
			return nil
		}
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
		if b.Len() > 16<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = db.NewBatch()
		}
		return nil
	})
	if err != nil {
		return info, err
	}
	// The new cluster's identity and members, as a bootstrap would have
	// applied them, and this member's own ID.
	if err := membership.StageClusterID(b, membership.ComputeClusterID(ids)); err != nil {
		return info, err
	}
	for _, mem := range members {
		if err := membership.StageMember(b, mem); err != nil {
			return info, err
		}
	}
	if err := b.Set(localIDKey, binary.BigEndian.AppendUint64(nil, self.ID), nil); err != nil {
		return info, err
	}
	// Raft starts from a snapshot at index 1, term 1, that holds this state
	// and makes every member a voter: all members agree on it without a
	// log, and the first leader appends from index 2.
	applied := binary.BigEndian.AppendUint64(nil, 1)
	if err := b.Set(schema.AppliedKey, binary.BigEndian.AppendUint64(applied, 1), nil); err != nil {
		return info, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return info, err
	}
	rs, err := raftlog.Open(db.DB)
	if err != nil {
		return info, err
	}
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: ids}}
	if err := rs.ApplySnapshot(meta); err != nil {
		return info, err
	}
	ok = true
	lg.Info("restored member", zap.String("data-dir", cfg.DataDir), zap.String("member-id", fmt.Sprintf("%x", self.ID)),
		zap.String("cluster-id", fmt.Sprintf("%x", membership.ComputeClusterID(ids))), zap.Int64("revision", info.Revision))
	return info, nil
}
