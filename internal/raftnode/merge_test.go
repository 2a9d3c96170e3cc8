package raftnode

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

func TestMergedProposalsRoundTrip(t *testing.T) {
	var parts [][]byte
	size := 0
	for i := range 5 {
		data, err := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: uint64(i + 1)}, Put: &pb.PutRequest{Key: []byte{byte(i)}, Value: bytes.Repeat([]byte{'v'}, i*100)}})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, data)
		size += len(data)
	}
	parts = append(parts, []byte{}) // an empty part survives too
	got, err := Proposals(MergeProposals(parts, size))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(parts) {
		t.Fatalf("got %d parts, want %d", len(got), len(parts))
	}
	for i := range parts {
		if !bytes.Equal(got[i], parts[i]) {
			t.Fatalf("part %d: got %x, want %x", i, got[i], parts[i])
		}
	}
	// A single proposal is its own data: it never starts with 0x00.
	for _, p := range parts[:5] {
		if p[0] == 0 {
			t.Fatalf("a marshalled request starts with 0x00: %x", p)
		}
		one, err := Proposals(p)
		if err != nil || len(one) != 1 || !bytes.Equal(one[0], p) {
			t.Fatalf("Proposals(single) = %x, %v", one, err)
		}
	}
}

func TestMergedProposalsMalformed(t *testing.T) {
	good := MergeProposals([][]byte{[]byte("abc"), []byte("de")}, 5)
	for name, data := range map[string][]byte{
		"unknown version": {0x00, 0x02, 1, 'a'},
		"truncated part":  good[:len(good)-1],
		"bad varint":      {0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge length":     {0x00, 0x01, 0x80, 0x01},
	} {
		if _, err := Proposals(data); err == nil {
			t.Errorf("%s: Proposals(%x) succeeded", name, data)
		}
	}
}

// FuzzProposals: entry data comes from the leader's log; splitting it
// never panics, and what MergeProposals writes splits back unchanged.
func FuzzProposals(f *testing.F) {
	f.Add(MergeProposals([][]byte{[]byte("abc"), []byte("de")}, 5))
	f.Add([]byte{0x00, 0x01})
	f.Add([]byte{0x0a, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		parts, err := Proposals(data)
		if err != nil || len(parts) < 2 {
			return
		}
		size := 0
		for _, p := range parts {
			size += len(p)
		}
		again, err := Proposals(MergeProposals(parts, size))
		if err != nil || len(again) != len(parts) {
			t.Fatalf("re-merged %d parts split into %d (%v)", len(parts), len(again), err)
		}
		for i := range parts {
			if !bytes.Equal(again[i], parts[i]) {
				t.Fatalf("part %d changed: %x -> %x", i, parts[i], again[i])
			}
		}
	})
}
