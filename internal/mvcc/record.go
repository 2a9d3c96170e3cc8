package mvcc

import (
	"encoding/binary"
	"errors"
)

// A stored version is a record: a flags byte, then for a live version the
// create revision, version and lease as uvarints, then the value bytes.
// A tombstone is the single byte flagTombstone. Mod revision is in the key.
const flagTombstone byte = 1

var errBadRecord = errors.New("mvcc: malformed stored value")

type record struct {
	tombstone bool
	create    int64
	version   int64
	lease     int64
	value     []byte
}

func appendRecord(dst []byte, r record) []byte {
	if r.tombstone {
		return append(dst, flagTombstone)
	}
	dst = append(dst, 0)
	dst = binary.AppendUvarint(dst, uint64(r.create))
	dst = binary.AppendUvarint(dst, uint64(r.version))
	dst = binary.AppendUvarint(dst, uint64(r.lease))
	return append(dst, r.value...)
}

// decodeRecord decodes b. When withValue is false the value is not
// referenced. The returned value aliases b.
func decodeRecord(b []byte, withValue bool) (record, error) {
	if len(b) == 0 {
		return record{}, errBadRecord
	}
	switch b[0] {
	case flagTombstone:
		if len(b) != 1 {
			return record{}, errBadRecord
		}
		return record{tombstone: true}, nil
	case 0:
	default:
		return record{}, errBadRecord
	}
	var r record
	b = b[1:]
	for _, dst := range []*int64{&r.create, &r.version, &r.lease} {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return record{}, errBadRecord
		}
		*dst = int64(v)
		b = b[n:]
	}
	if withValue {
		r.value = b
	}
	return r, nil
}
