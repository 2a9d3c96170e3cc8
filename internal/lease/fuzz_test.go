package lease

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecord: a lease record read back from disk is decoded or
// refused, never a panic, and what decodes encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(&lease{ttl: 10, remaining: 4}))
	f.Add(encodeRecord(&lease{ttl: 1 << 40}))
	f.Add([]byte{})
	f.Add([]byte{recordVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		ls, err := decodeRecord(7, b)
		if err != nil {
			return
		}
		if ls.id != 7 {
			t.Fatalf("decoded lease ID %x, want 7", ls.id)
		}
		if got := encodeRecord(ls); !bytes.Equal(got, b) {
			t.Fatalf("record %x decodes to %+v, which encodes to %x", b, ls, got)
		}
	})
}
