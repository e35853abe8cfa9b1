package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sluice-lb/sluice/internal/config"
)

// This file: native gRPC over TLS on both sides of sluice: a grpc-go
// client (TLS, ALPN h2) to a TLS listener, a pool with upstream_http2 to an
// https:// grpc-go backend whose certificate another CA issued.

// tlsSeen records how the calls reached a backend: whether each came over
// TLS with ALPN h2.
type tlsSeen struct {
	mu    sync.Mutex // guards calls and bad
	calls int
	bad   []string // calls that did not come over TLS with h2
}

func (s *tlsSeen) record(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	switch {
	case !ok:
		s.bad = append(s.bad, "a call not over TLS")
	case info.State.NegotiatedProtocol != "h2":
		s.bad = append(s.bad, "a call with ALPN "+info.State.NegotiatedProtocol)
	}
}

// taggingInterceptors make a backend add trailer metadata x-tls-backend:
// yes to every call (errors included) and record how it came in seen.
func taggingInterceptors(seen *tlsSeen) []grpc.ServerOption {
	tag := metadata.Pairs("x-tls-backend", "yes")
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen.record(ctx)
			grpc.SetTrailer(ctx, tag)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			seen.record(ss.Context())
			ss.SetTrailer(tag)
			return h(srv, ss)
		}),
	}
}

// wantTag fails unless md holds the backend's x-tls-backend trailer.
func wantTag(t *testing.T, what string, md metadata.MD) {
	t.Helper()
	if got := md.Get("x-tls-backend"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("%s: trailer x-tls-backend = %q, want [yes] (trailer metadata %v)", what, got, md)
	}
}

// TestGRPCOverTLSBothWays: a grpc-go client over TLS (ALPN h2) to a TLS
// listener, a pool with upstream_http2 to an https:// grpc-go backend
// whose certificate a second CA issued for a name that is not its address
// (upstream_tls ca and server_name). Every kind of call works end to end,
// with its trailers and its status, and the backend sees each call over
// TLS with h2.
func TestGRPCOverTLSBothWays(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	backCA := newTestCA(t, "gRPC backend CA")
	backLeaf := backCA.issue(t, leafOpts{names: []string{"grpc.backend.test"}})
	seen := &tlsSeen{}
	opts := append(taggingInterceptors(seen),
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{backLeaf.pair}, MinVersion: tls.VersionTLS12})))
	backend, _, _ := startGRPCBackendWith(t, "https", opts...)

	frontCA := newTestCA(t, "gRPC front CA")
	site := frontCA.issue(t, leafOpts{names: []string{"localhost"}, ips: loopback}).write(t, dir, "site")
	p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
		Backends:    []config.Backend{{Address: backend}},
		UpstreamTLS: config.UpstreamTLS{CA: backCA.write(t, dir, "backend-ca"), ServerName: "grpc.backend.test"}}
	s := startSluice(t, tlsListenerConfig(&config.TLS{Certificates: []config.Certificate{site}}, p))

	cc, err := grpc.NewClient(s.Addr("public"), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(frontCA, ""))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary with trailers, TLS to sluice", func(t *testing.T) {
		var trailer metadata.MD
		var pr peer.Peer
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer), grpc.Peer(&pr))
		if err != nil || string(resp.Payload.GetBody()) != "ping" {
			t.Fatalf("UnaryCall = %v, %v; want payload %q", resp, err, "ping")
		}
		if got := trailer.Get("x-served-by"); len(got) != 1 || got[0] != "grpc-backend" {
			t.Errorf("trailer x-served-by = %q, want [grpc-backend]", got)
		}
		wantTag(t, "unary", trailer)
		info, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok {
			t.Fatalf("client's peer auth info %T, want credentials.TLSInfo", pr.AuthInfo)
		}
		if got := info.State.NegotiatedProtocol; got != "h2" {
			t.Errorf("client to sluice: ALPN %q, want h2", got)
		}
		if got := info.State.PeerCertificates[0].Issuer.CommonName; got != "gRPC front CA" {
			t.Errorf("client to sluice: certificate issued by %q, want the listener's (gRPC front CA)", got)
		}
	})
	t.Run("error status with message and trailer metadata", func(t *testing.T) {
		const msg = "no such thing: 100% sure, ünïcode too"
		var trailer metadata.MD
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: msg}}, grpc.Trailer(&trailer))
		if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != msg {
			t.Errorf("status = %v, want NotFound %q", err, msg)
		}
		wantTag(t, "error status", trailer)
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
				t.Fatalf("after %v: %v", sizes, err)
			}
			sizes = append(sizes, len(m.Payload.GetBody()))
		}
		if len(sizes) != 3 || sizes[0] != 10 || sizes[1] != 100_000 || sizes[2] != 3 {
			t.Errorf("received sizes %v, want [10 100000 3]", sizes)
		}
		wantTag(t, "server streaming", st.Trailer())
	})
	t.Run("client streaming", func(t *testing.T) {
		st, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 40 {
			if err := st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 5000)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := st.CloseAndRecv()
		if err != nil || resp.AggregatedPayloadSize != 200_000 {
			t.Errorf("CloseAndRecv = %v, %v; want 200000", resp, err)
		}
		wantTag(t, "client streaming", st.Trailer())
	})
	t.Run("bidirectional", func(t *testing.T) {
		st, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			body := []byte{byte(i), 'x'}
			if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
				t.Fatal(err)
			}
			m, err := st.Recv()
			if err != nil || string(m.Payload.GetBody()) != string(body) {
				t.Fatalf("echo %d: %v, %v; want %q", i, m, err, body)
			}
		}
		st.CloseSend()
		if _, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want EOF", err)
		}
		wantTag(t, "bidirectional", st.Trailer())
	})
	t.Run("cancelled stream", func(t *testing.T) {
		// A bidi stream the client cancels: the backend's handler sees
		// its context end; the client's status is CANCELLED, from its own
		// side, and the connection stays usable for the next call.
		sctx, scancel := context.WithCancel(ctx)
		st, err := c.FullDuplexCall(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("a")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		scancel()
		if _, err := st.Recv(); status.Code(err) != codes.Canceled {
			t.Errorf("after cancel: %v, want Canceled", err)
		}
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("after")}})
		if err != nil || string(resp.Payload.GetBody()) != "after" {
			t.Errorf("call after a cancelled stream: %v, %v", resp, err)
		}
	})

	seen.mu.Lock()
	defer seen.mu.Unlock()
	if seen.calls < 6 {
		t.Errorf("the backend saw %d calls, want at least 6", seen.calls)
	}
	if len(seen.bad) > 0 {
		t.Errorf("the backend saw %v, want every call over TLS with h2", seen.bad)
	}
}
