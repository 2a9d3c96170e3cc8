package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairnkv/cairn/internal/apply"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
)

// httpHandler serves etcd's HTTP endpoints.
func httpHandler(m *member.Member, reg *prometheus.Registry, gw http.Handler, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/v3/", gw)
	mux.Handle("/v3beta/", http.StripPrefix("/v3beta", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/v3" + r.URL.Path
		gw.ServeHTTP(w, r)
	})))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"etcdserver": config.EtcdVersion, "etcdcluster": "3.7.0", "storage": "3.7.0", "cairn": config.CairnVersion,
		})
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		ok, reason := check(r.Context(), m, r.URL.Query().Get("serializable") == "true")
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"health": fmt.Sprint(ok), "reason": reason})
	})
	probes := func(linearizable bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			checks := []struct {
				name string
				fn   func(context.Context) error
			}{
				{"serializable_read", func(ctx context.Context) error { return read(ctx, m, true) }},
			}
			if linearizable {
				checks = append(checks, struct {
					name string
					fn   func(context.Context) error
				}{"linearizable_read", func(ctx context.Context) error { return read(ctx, m, false) }})
			}
			excluded := map[string]bool{}
			for _, e := range r.URL.Query()["exclude"] {
				excluded[e] = true
			}
			var out strings.Builder
			failed := false
			for _, c := range checks {
				if excluded[c.name] {
					fmt.Fprintf(&out, "[+]%s excluded: ok\n", c.name)
					continue
				}
				if err := c.fn(r.Context()); err != nil {
					failed = true
					fmt.Fprintf(&out, "[-]%s failed: %v\n", c.name, err)
				} else {
					fmt.Fprintf(&out, "[+]%s ok\n", c.name)
				}
			}
			if failed {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, out.String())
				return
			}
			if _, verbose := r.URL.Query()["verbose"]; verbose {
				fmt.Fprint(w, out.String())
			}
			fmt.Fprint(w, "ok\n")
		}
	}
	mux.HandleFunc("/livez", probes(false))
	mux.HandleFunc("/readyz", probes(true))
	return mux
}

func check(ctx context.Context, m *member.Member, serializable bool) (bool, string) {
	if m.Status().Leader == 0 {
		return false, "RAFT NO LEADER"
	}
	if err := read(ctx, m, serializable); err != nil {
		return false, "RANGE ERROR"
	}
	return true, ""
}

// read performs the same read etcd's health check does.
func read(ctx context.Context, m *member.Member, serializable bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !serializable {
		if err := m.LinearizableBarrier(ctx); err != nil {
			return err
		}
	}
	_, err := apply.Range(m.Store(), &pb.RangeRequest{Key: []byte("health"), KeysOnly: true, Limit: 1})
	return err
}

// gateway serves the gRPC services as JSON at /v3/..., as etcd's
// grpc-gateway does (proto field names, base64 bytes). Unary KV,
// Maintenance and Cluster calls go straight to the servers; Watch and Lease
// (which have streams) go through loop, a connection to this member's own
// gRPC server.
func gateway(ctx context.Context, kv pb.KVServer, mt pb.MaintenanceServer, cl pb.ClusterServer, loop *grpc.ClientConn) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}))
	for _, reg := range []func() error{
		func() error { return gw.RegisterKVHandlerServer(ctx, mux, kv) },
		func() error { return gw.RegisterMaintenanceHandlerServer(ctx, mux, mt) },
		func() error { return gw.RegisterClusterHandlerServer(ctx, mux, cl) },
		func() error { return gw.RegisterWatchHandler(ctx, mux, loop) },
		// All of Lease through the connection: LeaseKeepAlive is a stream.
		func() error { return gw.RegisterLeaseHandler(ctx, mux, loop) },
	} {
		if err := reg(); err != nil {
			return nil, fmt.Errorf("grpc-gateway: %w", err)
		}
	}
	return mux, nil
}
