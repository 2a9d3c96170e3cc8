package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cairnkv/cairn/internal/config"
	"github.com/cairnkv/cairn/internal/server"
)

// run is main without os.Exit, so tests can drive it.
func run(args, environ []string, stdout, stderr io.Writer) int {
	cfg, warnings, done, err := parseFlags(args, environ, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %v\n", err)
		return 2
	}
	if done {
		return 0
	}
	lg, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %v\n", err)
		return 2
	}
	defer func() { _ = lg.Sync() }()
	for _, w := range warnings {
		lg.Warn(w)
	}
	lg.Info("starting cairn", zap.String("cairn-version", config.CairnVersion), zap.String("etcd-version", config.EtcdVersion),
		zap.String("name", cfg.Name), zap.String("data-dir", cfg.DataDir))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(lg, cfg)
	if err != nil {
		lg.Error("cannot start", zap.Error(err))
		fmt.Fprintf(stderr, "cairn: %v\n", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		lg.Error("stopped with error", zap.Error(err))
		return 1
	}
	return 0
}

func newLogger(cfg config.Server) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Encoding = cfg.LogFormat
	if zc.Encoding == "" {
		zc.Encoding = "json"
	}
	zc.OutputPaths = cfg.LogOutputs
	zc.ErrorOutputPaths = []string{"stderr"}
	zc.Sampling = nil
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	return zc.Build()
}
