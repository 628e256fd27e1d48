package serve

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"keyward.dev/keyward/internal/verify"
)

// endpoint is what the HTTP and the gRPC server share: an address, optional
// TLS, and a listener opened only once the caches are synced, on every
// replica (no leader election).
type endpoint struct {
	Addr    string
	CertDir string
	Log     logr.Logger
	gate    *syncGate
	// certs, when set, blocks until the serving certificate is in CertDir.
	certs func(context.Context) error

	listening atomic.Pointer[net.Addr]
}

// NeedLeaderElection is false: every replica verifies.
func (e *endpoint) NeedLeaderElection() bool { return false }

// ListenAddr is the address the server listens on once it does (for ":0").
func (e *endpoint) ListenAddr() net.Addr {
	if a := e.listening.Load(); a != nil {
		return *a
	}
	return nil
}

// serve waits for the caches, listens, runs serve on the listener and
// calls stop when ctx ends. A ctx that ends before the caches sync is a
// clean stop.
func (e *endpoint) serve(ctx context.Context, what string, protos []string, serve func(net.Listener) error, stop func() error) error {
	if e.gate != nil {
		if err := e.gate.wait(ctx); err != nil {
			return nil
		}
	}
	if e.certs != nil {
		if err := e.certs(ctx); err != nil {
			return nil
		}
	}
	ln, err := listen(ctx, e.Addr, e.CertDir, protos)
	if err != nil {
		return err
	}
	a := ln.Addr()
	e.listening.Store(&a)
	e.Log.Info("serving "+what, "address", a.String(), "tls", e.CertDir != "")
	errc := make(chan error, 1)
	go func() { errc <- serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return stop()
	}
}

// Server serves the HTTP verification API on every replica.
type Server struct {
	endpoint
	Handler http.Handler
}

// Start listens once the caches are synced and serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	return s.serve(ctx, "the verification API", []string{"http/1.1", "h2"}, srv.Serve, func() error {
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	})
}

// listen opens a TCP listener, with TLS from certDir (tls.crt, tls.key,
// reloaded when they change) when certDir is set.
func listen(ctx context.Context, addr, certDir string, protos []string) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if certDir == "" {
		return ln, nil
	}
	w, err := certwatcher.New(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	go func() { _ = w.Start(ctx) }()
	return tls.NewListener(ln, &tls.Config{GetCertificate: w.GetCertificate, MinVersion: tls.VersionTLS12, NextProtos: protos}), nil
}

// GRPCServer serves ExtAuthz on every replica.
type GRPCServer struct {
	endpoint
	Auth *verify.ExtAuthz
}

// Bounds of the gRPC listener. It shares a process (and a memory limit)
// with the controllers, so what one client can make it hold is bounded
// like the HTTP listener's: a Check is a few KiB (Envoy sends headers, no
// body unless configured), so messages and header lists are capped at
// 64 KiB, the streams of one connection at GRPCMaxConcurrentStreams, and a
// client may not ping more often than every GRPCMinPingInterval.
const (
	GRPCMaxMessageBytes      = 64 << 10
	GRPCMaxConcurrentStreams = 128
	GRPCMinPingInterval      = 10 * time.Second
	grpcMaxConnectionIdle    = 5 * time.Minute
	grpcKeepaliveTime        = time.Minute
	grpcKeepaliveTimeout     = 20 * time.Second
)

// GRPCServerOptions are the bounds above as grpc.ServerOptions.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(GRPCMaxMessageBytes),
		grpc.MaxSendMsgSize(GRPCMaxMessageBytes),
		grpc.MaxHeaderListSize(GRPCMaxMessageBytes),
		grpc.MaxConcurrentStreams(GRPCMaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: GRPCMinPingInterval, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: grpcMaxConnectionIdle,
			Time: grpcKeepaliveTime, Timeout: grpcKeepaliveTimeout}),
		grpc.ConnectionTimeout(10 * time.Second),
	}
}

// Start listens once the caches are synced and serves until ctx ends.
func (s *GRPCServer) Start(ctx context.Context) error {
	srv := grpc.NewServer(GRPCServerOptions()...)
	authv3.RegisterAuthorizationServer(srv, s.Auth)
	return s.serve(ctx, "Envoy ext_authz (gRPC)", []string{"h2"}, srv.Serve, func() error {
		srv.GracefulStop()
		return nil
	})
}
