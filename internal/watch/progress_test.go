package watch

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// fakeSource is a revision log with nothing in it.
type fakeSource struct{}

func (fakeSource) Events(from, to int64, _, _ int, _ bool) ([]*mvccpb.Event, int64, error) {
	return nil, to, nil
}
func (fakeSource) CompactRev() int64 { return 0 }

func queued(s *Stream) []*pb.WatchResponse {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out []*pb.WatchResponse
	for {
		r, _, err := s.Next(ctx)
		if err != nil {
			return out
		}
		out = append(out, r)
	}
}

// TestRequestProgress: answered with watch ID -1 only when every watcher of
// the stream is synced (etcd's progressIfSync); a watcher waiting for a
// future start revision is not synced.
func TestRequestProgress(t *testing.T) {
	h := New(nil, fakeSource{}, 5, Config{})
	s := h.NewStream()
	defer s.Close()
	s.RequestProgress()
	if got := queued(s); len(got) != 0 {
		t.Fatalf("progress with no watchers: %v", got)
	}
	s.Create(&pb.WatchCreateRequest{Key: []byte("a")})
	s.RequestProgress()
	got := queued(s)
	if len(got) != 2 || !got[0].Created || got[1].WatchId != -1 || len(got[1].Events) != 0 {
		t.Fatalf("created + progress: got %v", got)
	}
	s.Create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 100})
	s.RequestProgress()
	if got := queued(s); len(got) != 1 || !got[0].Created {
		t.Fatalf("progress with a future watcher: %v", got)
	}
}

// TestProgressNotify: an idle watcher that asked for progress notifications
// gets one per interval with its own watch ID.
func TestProgressNotify(t *testing.T) {
	h := New(nil, fakeSource{}, 5, Config{ProgressInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s := h.NewStream()
	defer s.Close()
	s.Create(&pb.WatchCreateRequest{Key: []byte("quiet")})
	s.Create(&pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true, WatchId: 3})
	for i := range 2 {
		r, _, err := s.Next(ctx)
		if err != nil || !r.Created {
			t.Fatalf("created %d: %v %v", i, r, err)
		}
	}
	r, rev, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.WatchId != 3 || len(r.Events) != 0 || r.Canceled || rev != 5 {
		t.Fatalf("progress notification: %v at %d", r, rev)
	}
}
