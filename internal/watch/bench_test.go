package watch

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// BenchmarkNotify measures the applier's cost of handing one put to the
// hub (ns/op per put) with W synced watchers on the written key, and with
// 100,000 idle watchers on other keys. Streams are drained between puts.
func BenchmarkNotify(b *testing.B) {
	for _, tc := range []struct {
		name          string
		onKey, others int
	}{{"watchers=1", 1, 0}, {"watchers=10000", 10000, 0}, {"idle=100000", 0, 100000}} {
		b.Run(tc.name, func(b *testing.B) {
			h := New(nil, fakeSource{}, 1, Config{MaxPending: 1 << 20})
			var streams []*Stream
			for range 100 {
				s := h.NewStream()
				b.Cleanup(s.Close)
				streams = append(streams, s)
			}
			for i := range tc.onKey {
				streams[i%len(streams)].Create(&pb.WatchCreateRequest{Key: []byte("hot")})
			}
			for i := range tc.others {
				streams[i%len(streams)].Create(&pb.WatchCreateRequest{Key: fmt.Appendf(nil, "idle-%d", i)})
			}
			drain := func() {
				for _, s := range streams {
					queued(s)
				}
			}
			drain()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rev := int64(i + 2)
				ev := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{Key: []byte("hot"), ModRevision: rev, Value: []byte("v")}}
				h.Notify(rev, []*mvccpb.Event{ev}, true, true)
				if tc.onKey > 1 && i%16 == 15 {
					b.StopTimer()
					drain()
					b.StartTimer()
				}
			}
		})
	}
}
