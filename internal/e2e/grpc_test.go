package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sluice-lb/sluice/internal/config"
)

// grpcService is the interop TestService: echoes payloads, streams both
// ways, and can hold a stream open (until stop) so that a test can kill
// the server under it.
type grpcService struct {
	testpb.UnimplementedTestServiceServer
	hold chan struct{} // closed to end held streams
}

func (s *grpcService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if in.ResponseStatus != nil {
		return nil, status.Error(codes.Code(in.ResponseStatus.Code), in.ResponseStatus.Message)
	}
	if in.ResponseSize < 0 { // a slow call, for deadlines
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	grpc.SetTrailer(ctx, metadata.Pairs("x-served-by", "grpc-backend"))
	return &testpb.SimpleResponse{Payload: in.Payload}, nil
}

func (s *grpcService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for _, p := range in.ResponseParameters {
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.Size)}}); err != nil {
			return err
		}
	}
	if in.Payload != nil { // held open, after what was asked, until the test ends it
		select {
		case <-s.hold:
		case <-st.Context().Done():
			return st.Context().Err() // its deadline (DEADLINE_EXCEEDED), or cancelled
		}
	}
	return nil
}

func (s *grpcService) StreamingInputCall(st grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	total := 0
	for {
		in, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(in.Payload.GetBody())
	}
}

func (s *grpcService) FullDuplexCall(st grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		in, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(&testpb.StreamingOutputCallResponse{Payload: in.Payload}); err != nil {
			return err
		}
	}
}

// startGRPCBackend serves the TestService over h2c on 127.0.0.1; stop
// kills it (connections cut, as a crash would).
func startGRPCBackend(t *testing.T) (addr string, svc *grpcService, stop func()) {
	t.Helper()
	return startGRPCBackendWith(t, "http")
}

// startGRPCBackendWith serves the TestService (grpcService) on a fresh
// 127.0.0.1 port with opts (TLS credentials, interceptors); scheme is the
// URL's ("http" for h2c, "https" with TLS credentials). stop kills it as
// startGRPCBackend's does: listener and connections cut, as a crash would.
func startGRPCBackendWith(t *testing.T, scheme string, opts ...grpc.ServerOption) (url string, svc *grpcService, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc = &grpcService{hold: make(chan struct{})}
	srv := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, svc)
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	stop = sync.OnceFunc(func() {
		srv.Stop()
		wg.Wait()
	})
	t.Cleanup(func() {
		close(svc.hold)
		stop()
	})
	return scheme + "://" + ln.Addr().String(), svc, stop
}

// grpcThroughSluice runs a sluice (h2c listener, upstream_http2 pool) in
// front of a gRPC backend and returns a client connected to it.
func grpcThroughSluice(t *testing.T, backend string, request time.Duration) testpb.TestServiceClient {
	p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
		Backends: []config.Backend{{Address: backend}}}
	p.Timeouts.Request = request
	return grpcThroughPool(t, p)
}

// grpcThroughPool runs a sluice (h2c listener) in front of pool p and
// returns a client connected to it.
func grpcThroughPool(t *testing.T, p config.Pool) testpb.TestServiceClient {
	cfg := oneListener(p)
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	cc, err := grpc.NewClient(s.Addr("public"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func TestGRPCThroughSluice(t *testing.T) {
	addr, _, _ := startGRPCBackend(t)
	c := grpcThroughSluice(t, addr, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary with trailers", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
		if err != nil || string(resp.Payload.GetBody()) != "ping" {
			t.Fatalf("UnaryCall = %v, %v", resp, err)
		}
		if got := trailer.Get("x-served-by"); len(got) != 1 || got[0] != "grpc-backend" {
			t.Errorf("trailer x-served-by = %v, want [grpc-backend]", got)
		}
	})
	t.Run("status from the backend", func(t *testing.T) {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
			t.Errorf("status = %v, want NotFound %q", err, "no such thing")
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 100_000}, {Size: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for {
			m, err := st.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(m.Payload.GetBody()))
		}
		if len(sizes) != 3 || sizes[0] != 10 || sizes[1] != 100_000 || sizes[2] != 3 {
			t.Errorf("received sizes %v, want [10 100000 3]", sizes)
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		st, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if err := st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 5000)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := st.CloseAndRecv()
		if err != nil || resp.AggregatedPayloadSize != 100_000 {
			t.Errorf("CloseAndRecv = %v, %v; want 100000", resp, err)
		}
	})
	t.Run("bidirectional", func(t *testing.T) {
		st, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			body := []byte{byte(i)}
			if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
				t.Fatal(err)
			}
			m, err := st.Recv()
			if err != nil || len(m.Payload.GetBody()) != 1 || m.Payload.GetBody()[0] != byte(i) {
				t.Fatalf("echo %d: %v, %v", i, m, err)
			}
		}
		st.CloseSend()
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want EOF", err)
		}
	})
	t.Run("client deadline", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer dcancel()
		_, err := c.UnaryCall(dctx, &testpb.SimpleRequest{ResponseSize: -1})
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded {
			t.Errorf("slow call with a 300ms deadline: %v, want DeadlineExceeded", err)
		}
	})
}

// TestGRPCDeadlineFromSluice: sluice's request timeout ends a call the
// client gave more time: DEADLINE_EXCEEDED, not a hang or INTERNAL.
func TestGRPCDeadlineFromSluice(t *testing.T) {
	addr, _, _ := startGRPCBackend(t)
	c := grpcThroughSluice(t, addr, 300*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: -1})
	if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded {
		t.Errorf("slow call past sluice's 300ms request timeout: %v, want DeadlineExceeded", err)
	}
}

// TestGRPCBackendKilledMidStream: the backend dies while a server stream
// is open: the client gets UNAVAILABLE, not a hang.
func TestGRPCBackendKilledMidStream(t *testing.T) {
	addr, _, stop := startGRPCBackend(t)
	c := grpcThroughSluice(t, addr, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}, Payload: &testpb.Payload{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil { // the stream is open end to end
		t.Fatal(err)
	}
	stop()
	_, err = st.Recv()
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable {
		t.Errorf("stream after the backend died: %v, want Unavailable", err)
	}
	// And a new call, with no backend left: UNAVAILABLE too.
	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{})
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable {
		t.Errorf("call with the backend gone: %v, want Unavailable", err)
	}
}
