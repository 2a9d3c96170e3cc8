package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/cairnkv/cairn/internal/api"
	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/member"
)

// streamWorkers sizes gRPC's pool of handler goroutines. A write RPC holds
// its worker for a whole raft round (milliseconds), so the pool must cover
// the RPCs in flight, not the cores: past it every RPC gets a fresh
// goroutine whose stack grows 2 -> 16 KiB by copying. With 8 workers at 100
// clients, copystack was 7 % of the leader's CPU; with 256 the three
// members spent ~7 % less CPU per put (docs/benchmarks.md, "Sessions 9-11").
// An idle worker costs one small stack (the GC shrinks grown ones).
func streamWorkers() uint32 {
	return uint32(max(256, 4*runtime.GOMAXPROCS(0)))
}

// grpcOverheadBytes is the slack etcd adds to --max-request-bytes for the
// gRPC receive limit, so that the server, not gRPC, rejects big requests
// with etcd's error.
const grpcOverheadBytes = 512 * 1024

// Server is a wired cairn member.
type Server struct {
	lg            *zap.Logger
	cfg           config.Server
	m             *member.Member
	listeners     []net.Listener
	peerListeners []net.Listener
	reg           *prometheus.Registry
}

// New binds the client and peer listeners, then opens the member's data.
// Listening comes first: an address that cannot be bound stops the start
// before anything else happens, and the member's outgoing peer connections
// (bound to its own address with --feature-gates=SetMemberLocalAddr) can
// never take a port it is about to listen on.
func New(lg *zap.Logger, cfg config.Server) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{lg: lg, cfg: cfg, reg: prometheus.NewRegistry()}
	var err error
	if s.listeners, err = listen("--listen-client-urls", cfg.ListenClientURLs); err != nil {
		return nil, err
	}
	if s.peerListeners, err = listen("--listen-peer-urls", cfg.ListenPeerURLs); err != nil {
		s.closeListeners()
		return nil, err
	}
	m, err := member.New(lg, cfg)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	s.m = m
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerMetrics(s.reg, m)
	m.RegisterMetrics(s.reg)
	return s, nil
}

func listen(flag string, urls []string) ([]net.Listener, error) {
	var ls []net.Listener
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err == nil {
			var l net.Listener
			if l, err = net.Listen("tcp", u.Host); err == nil {
				ls = append(ls, l)
				continue
			}
		}
		for _, l := range ls {
			_ = l.Close()
		}
		return nil, fmt.Errorf("%s: listen on %s: %w", flag, raw, err)
	}
	return ls, nil
}

func (s *Server) closeListeners() {
	for _, l := range append(s.listeners, s.peerListeners...) {
		_ = l.Close()
	}
}

// Receive windows of client connections (see Run).
const (
	clientStreamWindow = 1 << 20
	clientConnWindow   = 16 << 20
)

// Run serves until ctx is done, then shuts down gracefully: stop accepting,
// let in-flight RPCs finish (bounded), stop raft and the applier, close the
// database.
func (s *Server) Run(ctx context.Context) error {
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(int(s.cfg.MaxRequestBytes+grpcOverheadBytes)),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		// Reuse handler goroutines: a fresh goroutine per RPC regrows its
		// stack every time (copystack was ~10% of the put path).
		grpc.NumStreamWorkers(streamWorkers()),
		// Fixed flow-control windows turn off gRPC's BDP estimator, which
		// otherwise pings every connection about once per request round
		// trip (requests are too small for its estimate ever to settle):
		// an extra frame written and read on both sides. With them (client
		// connections only) the three members made 2.3 instead of 2.7 read
		// syscalls per linearizable read at 100 clients (docs/design.md,
		// "Network", has both windows' effect). Requests are at
		// most --max-request-bytes, so the windows bound nothing a client
		// could not send anyway; responses follow the client's windows.
		grpc.StaticStreamWindowSize(clientStreamWindow),
		grpc.StaticConnWindowSize(clientConnWindow),
		grpc.ChainUnaryInterceptor(api.UnaryInterceptor(s.m)),
		grpc.ChainStreamInterceptor(api.StreamInterceptor(s.m)),
	)
	peerGS := grpc.NewServer(s.m.PeerServerOptions()...)
	s.m.RegisterPeer(peerGS)
	peerHTTP := &http.Server{Handler: s.m.PeerHTTP(), ReadHeaderTimeout: 10 * time.Second}
	kv, mt, cl := api.NewKV(s.m, int(s.cfg.MaxTxnOps)), api.NewMaintenance(s.m), api.NewCluster(s.m)
	s.reg.MustRegister(kv.Collectors()...)
	pb.RegisterKVServer(gs, kv)
	pb.RegisterMaintenanceServer(gs, mt)
	pb.RegisterClusterServer(gs, cl)
	pb.RegisterWatchServer(gs, api.NewWatch(s.m, s.cfg.ElectionTimeout))
	ls := api.NewLease(s.m)
	pb.RegisterLeaseServer(gs, ls)
	self, err := registerRecipes(s.lg, gs)
	if err != nil {
		return err
	}
	defer self.close()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	// Streaming RPCs reach the gateway through the in-process connection
	// to the gRPC server itself (grpc-gateway serves streams only as a
	// client).
	gw, err := gateway(ctx, kv, mt, cl, self.cli.ActiveConnection())
	if err != nil {
		return err
	}
	if mux, ok := gw.(*gwruntime.ServeMux); ok {
		if err := registerRecipesGateway(mux, self); err != nil {
			return fmt.Errorf("grpc-gateway: %w", err)
		}
	}
	hsrv := &http.Server{Handler: httpHandler(s.m, s.reg, gw, s.cfg.EnablePprof), ReadHeaderTimeout: 10 * time.Second}

	memberCtx, stopMember := context.WithCancel(context.Background())
	defer stopMember()
	memberDone := make(chan error, 1)
	go func() { memberDone <- s.m.Run(memberCtx) }()

	g := new(errgroup.Group)
	g.Go(func() error { return self.serve(gs) })
	var splits []*splitListener
	for _, l := range s.listeners {
		sl := newSplitListener(l)
		splits = append(splits, sl)
		g.Go(func() error { sl.serve(); return nil })
		g.Go(func() error {
			if err := gs.Serve(sl.grpc); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("grpc serve: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			if err := hsrv.Serve(sl.http); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("http serve: %w", err)
			}
			return nil
		})
	}

	for _, l := range s.peerListeners {
		sl := newSplitListener(l)
		splits = append(splits, sl)
		g.Go(func() error { sl.serve(); return nil })
		g.Go(func() error {
			if err := peerGS.Serve(sl.grpc); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("peer grpc serve: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			if err := peerHTTP.Serve(sl.http); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("peer http serve: %w", err)
			}
			return nil
		})
	}

	var runErr error
	select {
	case <-s.m.Ready():
		s.lg.Info("ready to serve client requests",
			zap.Strings("listen-client-urls", s.cfg.ListenClientURLs),
			zap.String("member-id", fmt.Sprintf("%x", s.m.ID())),
			zap.String("cluster-id", fmt.Sprintf("%x", s.m.Cluster().ClusterID())))
		select {
		case <-ctx.Done():
		case <-s.m.Removed(): // stop serving before the member closes its DB
			runErr = member.ErrRemoved
		case runErr = <-memberDone:
			memberDone <- runErr
		}
	case <-ctx.Done():
	case <-s.m.Removed():
		runErr = member.ErrRemoved
	case runErr = <-memberDone:
		memberDone <- runErr
	}
	s.lg.Info("shutting down")
	hs.Shutdown()
	self.close()
	for _, sl := range splits {
		_ = sl.close()
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
		<-stopped
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = hsrv.Shutdown(shutCtx)
	cancel()
	// Peers keep talking to this member until its raft node stops.
	stopMember()
	merr := <-memberDone
	peerGS.Stop()
	_ = peerHTTP.Close()
	if err := g.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr == nil {
		runErr = merr
	}
	if errors.Is(runErr, member.ErrRemoved) {
		// Compat: etcd exits cleanly once removed, so supervisors do not
		// restart it into a cluster that no longer has it.
		runErr = nil
	}
	s.lg.Info("stopped")
	return runErr
}
