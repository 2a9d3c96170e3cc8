package mvcc

import (
	"encoding/binary"
	"errors"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

// revSuffixLen is the length of the ^main|^sub suffix of a version key.
const revSuffixLen = 16

// errBadKey reports a stored key that does not decode; it means the data
// directory is corrupt.
var errBadKey = errors.New("mvcc: malformed stored key")

// appendEncodedKey appends the order-preserving encoding of key: 0x00 is
// escaped as 0x00 0xFF and the key is terminated by 0x00 0x01. For any two
// keys a < b, enc(a) < enc(b), and no encoding is a prefix of another.
func appendEncodedKey(dst, key []byte) []byte {
	for _, c := range key {
		if c == 0 {
			dst = append(dst, 0, 0xff)
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, 0, 1)
}

// decodeKey reverses appendEncodedKey on enc, which must include the terminator.
func decodeKey(enc []byte) ([]byte, error) {
	out := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if c != 0 {
			out = append(out, c)
			continue
		}
		if i+1 >= len(enc) {
			return nil, errBadKey
		}
		switch enc[i+1] {
		case 0xff:
			out = append(out, 0)
			i++
		case 0x01:
			if i+2 != len(enc) {
				return nil, errBadKey
			}
			return out, nil
		default:
			return nil, errBadKey
		}
	}
	return nil, errBadKey
}

// versionKey is schema.MVCC | enc(key) | ^main | ^sub.
func versionKey(dst, key []byte, main, sub int64) []byte {
	dst = append(dst, schema.MVCC)
	dst = appendEncodedKey(dst, key)
	return appendRevSuffix(dst, main, sub)
}

func appendRevSuffix(dst []byte, main, sub int64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(main))
	return binary.BigEndian.AppendUint64(dst, ^uint64(sub))
}

// keyStart is the smallest version key of key (its newest possible version).
func keyStart(key []byte) []byte {
	b := append(make([]byte, 0, len(key)+4), schema.MVCC)
	return appendEncodedKey(b, key)
}

// keyAfter is the smallest version key of any user key greater than key:
// the terminator 0x00 0x01 becomes 0x00 0x02, which sorts after every version
// of key and before enc(key + anything).
func keyAfter(key []byte) []byte {
	b := keyStart(key)
	b[len(b)-1] = 2
	return b
}

// splitVersionKey splits a stored MVCC key into its encoded user key (with
// terminator, without prefix) and its revision.
func splitVersionKey(k []byte) (enc []byte, main, sub int64, err error) {
	if len(k) < 1+2+revSuffixLen || k[0] != schema.MVCC {
		return nil, 0, 0, errBadKey
	}
	n := len(k) - revSuffixLen
	main = int64(^binary.BigEndian.Uint64(k[n:]))
	sub = int64(^binary.BigEndian.Uint64(k[n+8:]))
	return k[1:n], main, sub, nil
}

// revLogKey is schema.RevLog | main | sub.
func revLogKey(main, sub int64) []byte {
	b := make([]byte, 0, 17)
	b = append(b, schema.RevLog)
	b = binary.BigEndian.AppendUint64(b, uint64(main))
	return binary.BigEndian.AppendUint64(b, uint64(sub))
}

func splitRevLogKey(k []byte) (main, sub int64, err error) {
	if len(k) != 17 || k[0] != schema.RevLog {
		return 0, 0, errBadKey
	}
	return int64(binary.BigEndian.Uint64(k[1:])), int64(binary.BigEndian.Uint64(k[9:])), nil
}
