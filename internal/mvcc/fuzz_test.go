package mvcc

// Fuzz targets for the on-disk encodings. Run one with, e.g.,
//
//	go test ./internal/mvcc -run XXX -fuzz FuzzKeyEncoding -fuzztime 30s
//
// Crashers go to testdata/fuzz/<Name>/ and then run as regression cases in
// every plain `go test`.

import (
	"bytes"
	"math"
	"testing"

	"github.com/cairnkv/cairn/internal/storage/schema"
)

var fuzzKeys = [][]byte{
	nil, {0}, {0, 0}, {0, 1}, {0, 0xff}, {0xff}, {0xff, 0}, {0xff, 0xff},
	[]byte("a"), []byte("a\x00"), []byte("a\x00\x01"), []byte("a\x01"), []byte("ab"), []byte("foo/bar"),
}

// FuzzKeyEncoding checks the order-preserving key encoding: it round trips,
// it orders keys exactly as bytes.Compare does (also inside full version
// keys, where the revision suffix must never outweigh the key), keyAfter
// separates a key's versions from every greater key, and decodeKey never
// panics on arbitrary input.
func FuzzKeyEncoding(f *testing.F) {
	for _, a := range fuzzKeys {
		for _, b := range fuzzKeys {
			f.Add(a, b, int64(5), int64(9))
		}
	}
	f.Add([]byte("a"), []byte("a"), int64(math.MaxInt64), int64(0))
	f.Add([]byte("\x00\x02"), []byte("\x00"), int64(1), int64(-1))
	f.Fuzz(func(t *testing.T, a, b []byte, revA, revB int64) {
		encA, encB := appendEncodedKey(nil, a), appendEncodedKey(nil, b)
		for _, c := range []struct{ key, enc []byte }{{a, encA}, {b, encB}} {
			dec, err := decodeKey(c.enc)
			if err != nil || !bytes.Equal(dec, c.key) {
				t.Fatalf("decodeKey(enc(%q)) = %q, %v", c.key, dec, err)
			}
		}
		want := bytes.Compare(a, b)
		if got := bytes.Compare(encA, encB); got != want {
			t.Fatalf("compare(enc(%q), enc(%q)) = %d, want %d", a, b, got, want)
		}
		if want != 0 && bytes.HasPrefix(encB, encA) || want != 0 && bytes.HasPrefix(encA, encB) {
			t.Fatalf("enc(%q) and enc(%q): one is a prefix of the other", a, b)
		}

		// Version keys: key order first; for one key, newest first.
		mainA, mainB := revA&math.MaxInt64, revB&math.MaxInt64
		vA, vB := versionKey(nil, a, mainA, 0), versionKey(nil, b, mainB, 1)
		got := bytes.Compare(vA, vB)
		switch {
		case want != 0 && got != want:
			t.Fatalf("compare(versionKey(%q, %d), versionKey(%q, %d)) = %d, want key order %d", a, mainA, b, mainB, got, want)
		case want == 0 && mainA != mainB && (got < 0) != (mainA > mainB):
			t.Fatalf("versions %d and %d of %q: newer must sort first", mainA, mainB, a)
		}
		for _, v := range [][]byte{vA, vB} {
			enc, main, sub, err := splitVersionKey(v)
			if err != nil || main < 0 || sub < 0 {
				t.Fatalf("splitVersionKey(%x) = %v, %d, %d", v, err, main, sub)
			}
			if !sameKey(v, enc) {
				t.Fatalf("sameKey(%x, %x) = false", v, enc)
			}
		}
		if sameKey(vB, encA) != (want == 0) {
			t.Fatalf("sameKey(versionKey(%q), enc(%q)) = %v", b, a, !(want == 0))
		}

		// Range bounds: keyStart(a) <= every version of a < keyAfter(a),
		// and every version of b sorts before keyAfter(a) iff b <= a.
		if bytes.Compare(keyStart(a), vA) > 0 || bytes.Compare(vA, keyAfter(a)) >= 0 {
			t.Fatalf("version key of %q outside [keyStart, keyAfter)", a)
		}
		if (bytes.Compare(vB, keyAfter(a)) < 0) != (want >= 0) {
			t.Fatalf("versionKey(%q) vs keyAfter(%q): wrong side", b, a)
		}

		// decodeKey on arbitrary bytes: no panic; success only for a
		// canonical encoding.
		for _, raw := range [][]byte{a, b, append(append([]byte(nil), a...), b...)} {
			if dec, err := decodeKey(raw); err == nil && !bytes.Equal(appendEncodedKey(nil, dec), raw) {
				t.Fatalf("decodeKey(%x) = %q, which does not encode back", raw, dec)
			}
		}
	})
}

// FuzzDecodeRecord checks that decodeRecord never panics on arbitrary
// stored values and that appendRecord/decodeRecord round trip.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, false, int64(0), int64(0), int64(0), []byte(nil))
	f.Add([]byte{flagTombstone}, true, int64(1), int64(1), int64(0), []byte("v"))
	f.Add([]byte{0, 2, 1, 0, 'v'}, false, int64(2), int64(1), int64(math.MaxInt64), []byte{0, 0xff})
	f.Add([]byte{0, 0x80, 0x80}, false, int64(-1), int64(math.MinInt64), int64(-7), []byte("value"))
	f.Add([]byte{2}, false, int64(1<<40), int64(3), int64(1), []byte{})
	f.Fuzz(func(t *testing.T, raw []byte, tomb bool, create, version, lease int64, value []byte) {
		// Arbitrary bytes: decode with and without the value; a
		// successful decode re-encodes to something that decodes the same.
		r, err := decodeRecord(raw, true)
		r2, err2 := decodeRecord(raw, false)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("decodeRecord(%x): withValue error %v, without %v", raw, err, err2)
		}
		if err == nil {
			if r2.value != nil || r2.tombstone != r.tombstone || r2.create != r.create || r2.version != r.version || r2.lease != r.lease {
				t.Fatalf("decodeRecord(%x, false) = %+v, want %+v without value", raw, r2, r)
			}
			again, err := decodeRecord(appendRecord(nil, r), true)
			if err != nil || !equalRecord(again, r) {
				t.Fatalf("re-decode of %+v = %+v, %v", r, again, err)
			}
		}

		// Round trip of a constructed record.
		in := record{tombstone: tomb, create: create, version: version, lease: lease, value: value}
		if tomb {
			in = record{tombstone: true}
		}
		prefix := []byte("prefix")
		enc := appendRecord(append([]byte(nil), prefix...), in)
		if !bytes.HasPrefix(enc, prefix) {
			t.Fatalf("appendRecord clobbered dst")
		}
		out, err := decodeRecord(enc[len(prefix):], true)
		if err != nil || !equalRecord(out, in) {
			t.Fatalf("round trip of %+v = %+v, %v", in, out, err)
		}
		// A stored record is a tombstone exactly when it is the single
		// tombstone byte (compaction relies on that).
		if isTomb := bytes.Equal(enc[len(prefix):], []byte{flagTombstone}); isTomb != tomb {
			t.Fatalf("record %+v encodes as %x", in, enc[len(prefix):])
		}
	})
}

func equalRecord(a, b record) bool {
	return a.tombstone == b.tombstone && a.create == b.create && a.version == b.version &&
		a.lease == b.lease && bytes.Equal(a.value, b.value)
}

// FuzzSplitVersionKey checks that splitVersionKey and splitRevLogKey never
// panic on arbitrary stored keys, and that whatever splits (and decodes)
// rebuilds to the same key.
func FuzzSplitVersionKey(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{schema.MVCC})
	f.Add(versionKey(nil, []byte("a"), 2, 0))
	f.Add(versionKey(nil, []byte{0, 0xff}, math.MaxInt64, 3))
	f.Add(versionKey(nil, nil, 1, 0))
	f.Add(append([]byte{schema.MVCC, 0, 1}, make([]byte, revSuffixLen)...))
	f.Add(revLogKey(7, 1))
	f.Fuzz(func(t *testing.T, k []byte) {
		enc, main, sub, err := splitVersionKey(k)
		if err == nil {
			if len(enc)+1+revSuffixLen != len(k) || !bytes.Equal(enc, k[1:1+len(enc)]) {
				t.Fatalf("splitVersionKey(%x): enc %x does not alias the key", k, enc)
			}
			if !sameKey(k, enc) {
				t.Fatalf("sameKey(%x, %x) = false", k, enc)
			}
			if key, err := decodeKey(enc); err == nil {
				if re := versionKey(nil, key, main, sub); !bytes.Equal(re, k) {
					t.Fatalf("versionKey(split(%x)) = %x", k, re)
				}
			}
		}
		if main, sub, err := splitRevLogKey(k); err == nil {
			if re := revLogKey(main, sub); !bytes.Equal(re, k) {
				t.Fatalf("revLogKey(split(%x)) = %x", k, re)
			}
		}
	})
}
