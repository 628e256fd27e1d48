package serve

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"keyward.dev/keyward/internal/verify"
)

// TestGRPCListenerIsBounded: the ext_authz listener shares the manager's
// memory limit with the controllers, so a client cannot make it hold more
// than its bounds: oversized Checks are refused before they are read, many
// concurrent ones over few connections leave the heap where it was, and
// valid Checks are answered throughout.
func TestGRPCListenerIsBounded(t *testing.T) {
	f, v := newWorld(t)
	srv := grpc.NewServer(GRPCServerOptions()...)
	authv3.RegisterAuthorizationServer(srv, &verify.ExtAuthz{Verifier: v})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	// The flood comes from another process (this test binary again), so
	// that the heap measured here is the server's alone.
	cmd := exec.Command(os.Args[0], "-test.run=^TestGRPCFloodClient$", "-test.v")
	cmd.Env = append(os.Environ(), floodAddrEnv+"="+ln.Addr().String(), floodKeyEnv+"="+f.Active)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the flood client failed: %v", err)
	}
	after := heap()
	var refused, answered int
	if m := regexp.MustCompile(`flood: (\d+) refused, (\d+) answered`).FindSubmatch(out); m != nil {
		refused, _ = strconv.Atoi(string(m[1]))
		answered, _ = strconv.Atoi(string(m[2]))
	}
	t.Logf("gRPC bounds: %d of %d oversized Checks refused, %d of %d concurrent valid Checks answered; server heap in use %.1f MiB before, %.1f MiB after",
		refused, floodOversized, answered, floodValid, float64(before)/(1<<20), float64(after)/(1<<20))
	if refused != floodOversized {
		t.Errorf("oversized Checks refused: %d of %d", refused, floodOversized)
	}
	if answered != floodValid {
		t.Errorf("concurrent valid Checks answered: %d of %d", answered, floodValid)
	}
	if after > before+16<<20 {
		t.Errorf("heap grew by %.1f MiB (bound 16 MiB)", float64(after-before)/(1<<20))
	}
}

const (
	floodAddrEnv   = "KEYWARD_TEST_GRPC_FLOOD_ADDR"
	floodKeyEnv    = "KEYWARD_TEST_GRPC_FLOOD_KEY"
	floodOversized = 64
	floodValid     = 1024
)

// TestGRPCFloodClient is TestGRPCListenerIsBounded's client, run in a
// process of its own: 64 oversized (1 MiB) and 1024 valid Checks at once
// over 4 connections.
func TestGRPCFloodClient(t *testing.T) {
	addr := os.Getenv(floodAddrEnv)
	if addr == "" {
		t.Skip("run by TestGRPCListenerIsBounded")
	}
	conns := make([]authv3.AuthorizationClient, 4)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = authv3.NewAuthorizationClient(cc)
	}
	req := func(extra string) *authv3.CheckRequest {
		h := map[string]string{"authorization": "Bearer " + os.Getenv(floodKeyEnv)}
		if extra != "" {
			h["x-padding"] = extra
		}
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: h}}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	big := strings.Repeat("x", 1<<20)
	var wg sync.WaitGroup
	var refused, answered atomic.Int32
	for i := 0; i < floodOversized+floodValid; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := conns[i%len(conns)]
			if i < floodOversized {
				if _, err := c.Check(ctx, req(big)); status.Code(err) == codes.ResourceExhausted {
					refused.Add(1)
				}
				return
			}
			if r, err := c.Check(ctx, req("")); err == nil && r.GetOkResponse() != nil {
				answered.Add(1)
			}
		}(i)
	}
	wg.Wait()
	fmt.Printf("flood: %d refused, %d answered\n", refused.Load(), answered.Load())
}
