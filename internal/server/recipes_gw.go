package server

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"

	"github.com/cairnkv/cairn/internal/api/v3electionpb"
	"github.com/cairnkv/cairn/internal/api/v3lockpb"
)

// registerRecipesGateway serves the Election and Lock services on the JSON
// gateway at etcd's paths (/v3/election/..., /v3/lock/...): POST a JSON
// request, get the JSON response; /v3/election/observe streams one
// {"result": ...} object per leader change, as grpc-gateway does.
func registerRecipesGateway(mux *runtime.ServeMux, sc *selfClient) error {
	type route struct {
		path string
		new  func() proto.Message
		call func(context.Context, proto.Message) (proto.Message, error)
	}
	el, lk := sc.election, sc.lock
	routes := []route{
		{"/v3/election/campaign", func() proto.Message { return &v3electionpb.CampaignRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return el.Campaign(ctx, m.(*v3electionpb.CampaignRequest))
			}},
		{"/v3/election/proclaim", func() proto.Message { return &v3electionpb.ProclaimRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return el.Proclaim(ctx, m.(*v3electionpb.ProclaimRequest))
			}},
		{"/v3/election/leader", func() proto.Message { return &v3electionpb.LeaderRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return el.Leader(ctx, m.(*v3electionpb.LeaderRequest))
			}},
		{"/v3/election/resign", func() proto.Message { return &v3electionpb.ResignRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return el.Resign(ctx, m.(*v3electionpb.ResignRequest))
			}},
		{"/v3/lock/lock", func() proto.Message { return &v3lockpb.LockRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return lk.Lock(ctx, m.(*v3lockpb.LockRequest))
			}},
		{"/v3/lock/unlock", func() proto.Message { return &v3lockpb.UnlockRequest{} },
			func(ctx context.Context, m proto.Message) (proto.Message, error) {
				return lk.Unlock(ctx, m.(*v3lockpb.UnlockRequest))
			}},
	}
	for _, rt := range routes {
		err := mux.HandlePath(http.MethodPost, rt.path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			ctx := r.Context()
			in, out := runtime.MarshalerForRequest(mux, r)
			req := rt.new()
			if err := decodeBody(in, r, req); err != nil {
				runtime.HTTPError(ctx, mux, out, w, r, err)
				return
			}
			resp, err := rt.call(ctx, req)
			if err != nil {
				runtime.HTTPError(ctx, mux, out, w, r, err)
				return
			}
			runtime.ForwardResponseMessage(ctx, mux, out, w, r, resp)
		})
		if err != nil {
			return err
		}
	}
	return mux.HandlePath(http.MethodPost, "/v3/election/observe", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		in, out := runtime.MarshalerForRequest(mux, r)
		req := &v3electionpb.LeaderRequest{}
		if err := decodeBody(in, r, req); err != nil {
			runtime.HTTPError(ctx, mux, out, w, r, err)
			return
		}
		ch := make(chan *v3electionpb.LeaderResponse)
		errc := make(chan error, 1)
		done := make(chan struct{})
		// The observer ends when ctx does; the handler waits for it.
		defer func() { cancel(); <-done }()
		go func() {
			defer close(done)
			errc <- sc.election.ObserveTo(ctx, req, func(resp *v3electionpb.LeaderResponse) error {
				select {
				case ch <- resp:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
		runtime.ForwardResponseStream(ctx, mux, out, w, r, func() (proto.Message, error) {
			select {
			case resp := <-ch:
				return resp, nil
			case err := <-errc:
				if err == nil || errors.Is(err, context.Canceled) {
					return nil, io.EOF
				}
				return nil, err
			}
		})
	})
}

// decodeBody decodes a JSON request body; an empty body is an empty request.
func decodeBody(in runtime.Marshaler, r *http.Request, req proto.Message) error {
	if err := in.NewDecoder(r.Body).Decode(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
