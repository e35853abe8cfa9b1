package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-lb/sluice/internal/config"
)

// This file: the grpc-timeout a backend gets under a pool's request
// timeout, and a backend killed in the middle of each kind of stream (seen
// by grpc-go and, frame by frame, by a raw HTTP/2 client).

// backendDeadline is the deadline a backend's handler found on a call:
// whether it had one, and how long it had left when the handler began.
type backendDeadline struct {
	set  bool
	left time.Duration
}

func (d backendDeadline) String() string {
	if !d.set {
		return "no deadline"
	}
	return "a deadline " + d.left.String() + " away"
}

// deadlineInterceptors make a backend send the deadline each call arrives
// with (from its grpc-timeout) on seen.
func deadlineInterceptors(seen chan<- backendDeadline) []grpc.ServerOption {
	note := func(ctx context.Context) {
		dl, ok := ctx.Deadline()
		select {
		case seen <- backendDeadline{set: ok, left: time.Until(dl)}:
		default:
		}
	}
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			note(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			note(ss.Context())
			return h(srv, ss)
		}),
	}
}

// TestGRPCTimeoutToBackendBounded: with a pool's timeouts.request, the
// grpc-timeout a backend gets is at most that bound, whether the client
// gave a much longer deadline or none (so the backend stops working when
// sluice stops waiting: proxy.CapGRPCTimeout); a client's shorter deadline
// is kept. The control pool, without a request timeout, shows what the
// backend would see without the cap: the client's 60 s, or no deadline.
func TestGRPCTimeoutToBackendBounded(t *testing.T) {
	t.Parallel()
	const bound = 5 * time.Second
	seen := make(chan backendDeadline, 16)
	backend, _, _ := startGRPCBackendWith(t, "http", deadlineInterceptors(seen)...)
	pool := func(request time.Duration) config.Pool {
		p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
			Backends: []config.Backend{{Address: backend}}}
		p.Timeouts.Request = request
		return p
	}
	capped, uncapped := grpcThroughPool(t, pool(bound)), grpcThroughPool(t, pool(0))

	within := func(lo, hi time.Duration) func(backendDeadline) bool {
		return func(d backendDeadline) bool { return d.set && d.left > lo && d.left <= hi }
	}
	for _, tc := range []struct {
		name     string
		c        testpb.TestServiceClient
		deadline time.Duration // the client's; 0: none
		stream   bool          // a bidi stream, else a unary call
		want     string
		ok       func(backendDeadline) bool
	}{
		{"60s deadline is capped", capped, time.Minute, false, "a deadline at most " + bound.String() + " away", within(0, bound)},
		{"no deadline gets the bound", capped, 0, false, "a deadline at most " + bound.String() + " away", within(0, bound)},
		{"60s deadline on a stream is capped", capped, time.Minute, true, "a deadline at most " + bound.String() + " away", within(0, bound)},
		{"no deadline on a stream gets the bound", capped, 0, true, "a deadline at most " + bound.String() + " away", within(0, bound)},
		{"2s deadline is kept", capped, 2 * time.Second, false, "a deadline at most 2s away (the client's, not the bound)", within(0, 2*time.Second)},
		{"2s deadline on a stream is kept", capped, 2 * time.Second, true, "a deadline at most 2s away (the client's, not the bound)", within(0, 2*time.Second)},
		// Controls: the same calls without a request timeout.
		{"control: 60s deadline passes uncapped", uncapped, time.Minute, false, "a deadline more than " + bound.String() + " away", within(bound, time.Minute)},
		{"control: no deadline stays none", uncapped, 0, false, "no deadline", func(d backendDeadline) bool { return !d.set }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without a deadline, the call is bounded by the waits below
			// and cancelled at the end.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			done := make(chan error, 1)
			go func() {
				if !tc.stream {
					_, err := tc.c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("x")}})
					done <- err
					return
				}
				st, err := tc.c.FullDuplexCall(ctx)
				if err == nil {
					err = st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}})
				}
				if err == nil {
					_, err = st.Recv()
				}
				if err == nil {
					err = st.CloseSend()
				}
				done <- err
			}()
			var got backendDeadline
			select {
			case got = <-seen:
			case <-time.After(10 * time.Second):
				t.Fatal("the backend saw no call within 10s")
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("call: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the call did not end within 10s")
			}
			if !tc.ok(got) {
				t.Errorf("backend saw %v, want %s", got, tc.want)
			}
		})
	}
}

// TestGRPCBackendKilledMidStreamEveryKind: a backend killed while a call
// of each streaming kind is open end to end (its server stopped, its
// connections cut): the client gets UNAVAILABLE within the wait, never a
// hang. TestGRPCBackendKilledMidStream covers a server stream the same
// way; TestGRPCBrokenStreamRawFrames shows the status on the wire.
func TestGRPCBackendKilledMidStreamEveryKind(t *testing.T) {
	t.Parallel()
	wantUnavailable := func(t *testing.T, what string, err error) {
		t.Helper()
		if s, _ := status.FromError(err); s.Code() != codes.Unavailable {
			t.Errorf("%s after the backend died: %v, want Unavailable", what, err)
		}
	}
	t.Run("server streaming", func(t *testing.T) {
		addr, _, stop := startGRPCBackend(t)
		c := grpcThroughSluice(t, addr, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 20_000}}, Payload: &testpb.Payload{}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := st.Recv(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		stop()
		_, err = st.Recv()
		wantUnavailable(t, "Recv", err)
	})
	t.Run("client streaming", func(t *testing.T) {
		first := make(chan struct{})
		addr, _, stop := startGRPCBackendWith(t, "http", firstMessageSignal(first))
		c := grpcThroughSluice(t, addr, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}); err != nil {
			t.Fatal(err)
		}
		waitFirst(t, first)
		stop()
		// More messages may or may not be taken (Send reports only a
		// stream already ended, as io.EOF); the status is the call's.
		for range 5 {
			if st.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}}) != nil {
				break
			}
		}
		_, err = st.CloseAndRecv()
		wantUnavailable(t, "CloseAndRecv", err)
	})
	t.Run("bidirectional", func(t *testing.T) {
		addr, _, stop := startGRPCBackend(t)
		c := grpcThroughSluice(t, addr, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte{byte(i)}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
		}
		stop()
		_, err = st.Recv()
		wantUnavailable(t, "Recv", err)
		// The client half may still send; the call stays ended.
		st.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("late")}})
		_, err = st.Recv()
		wantUnavailable(t, "a second Recv", err)
	})
}

// firstMessageSignal makes a backend close first when a stream's handler
// has received its first message (once, for the backend's first stream).
func firstMessageSignal(first chan struct{}) grpc.ServerOption {
	var once sync.Once
	return grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &signalStream{ServerStream: ss, first: func() { once.Do(func() { close(first) }) }})
	})
}

// waitFirst waits (10s at most) for firstMessageSignal's channel.
func waitFirst(t *testing.T, first <-chan struct{}) {
	t.Helper()
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's handler did not receive the stream's first message within 10s")
	}
}

// signalStream calls first after each message received.
type signalStream struct {
	grpc.ServerStream
	first func()
}

func (s *signalStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.first()
	}
	return err
}

// grpcFrame is one gRPC message as it goes in DATA: a flag byte (not
// compressed), its length, then msg.
func grpcFrame(t *testing.T, msg proto.Message) string {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	n := len(b)
	return string([]byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) + string(b)
}

// rawGRPCStream is what a raw HTTP/2 client saw of one stream (and of the
// connection meanwhile).
type rawGRPCStream struct {
	frames  []string            // in order, for the report
	headers []map[string]string // the fields of each HEADERS of the stream
	data    int                 // DATA payload bytes of the stream
	ended   bool                // END_STREAM from the server
	reset   bool                // RST_STREAM for the stream
	gone    bool                // GOAWAY or the connection's end
}

// last is the fields of the stream's last HEADERS (its trailers, or the
// header of a trailers-only answer), nil when none came.
func (s *rawGRPCStream) last() map[string]string {
	if len(s.headers) == 0 {
		return nil
	}
	return s.headers[len(s.headers)-1]
}

// read reads frames until stream sid ends (END_STREAM or RST_STREAM), the
// connection ends, until(s) holds, or d passes; it answers SETTINGS and
// PING and gives back the flow-control window of what it read.
func (s *rawGRPCStream) read(h *rawH2, sid uint32, until func(*rawGRPCStream) bool, d time.Duration) {
	h.nc.SetReadDeadline(time.Now().Add(d))
	defer h.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for !s.ended && !s.reset && (until == nil || !until(s)) {
		f, err := h.fr.ReadFrame()
		if err != nil {
			s.frames = append(s.frames, "read: "+err.Error())
			s.gone = true
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame, *http2.PingFrame:
			h.control(f)
		case *http2.WindowUpdateFrame:
		case *http2.GoAwayFrame:
			s.frames = append(s.frames, fmt.Sprintf("GOAWAY %v last stream %d", f.ErrCode, f.LastStreamID))
			if f.LastStreamID < sid {
				s.gone = true
				return
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != sid {
				continue
			}
			fields := map[string]string{}
			var list []string
			for _, hf := range f.Fields {
				fields[hf.Name] = hf.Value
				list = append(list, hf.Name+": "+hf.Value)
			}
			s.headers = append(s.headers, fields)
			s.ended = f.StreamEnded()
			s.frames = append(s.frames, fmt.Sprintf("HEADERS end_stream=%v {%s}", s.ended, strings.Join(list, ", ")))
		case *http2.DataFrame:
			if f.StreamID != sid {
				continue
			}
			n := len(f.Data())
			s.data += n
			s.ended = f.StreamEnded()
			s.frames = append(s.frames, fmt.Sprintf("DATA %d bytes end_stream=%v", n, s.ended))
			if n > 0 {
				h.wmu.Lock()
				h.fr.WriteWindowUpdate(0, uint32(n))
				h.fr.WriteWindowUpdate(sid, uint32(n))
				h.wmu.Unlock()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == sid {
				s.reset = true
				s.frames = append(s.frames, "RST_STREAM "+f.ErrCode.String())
			}
		default:
			s.frames = append(s.frames, fmt.Sprintf("%v", f.Header()))
		}
	}
}

// TestGRPCBrokenStreamRawFrames: what a backend killed mid-call leaves on
// the wire, read frame by frame by a raw HTTP/2 client (h2c): the stream
// ends with a gRPC status, grpc-status 14 (UNAVAILABLE) in trailers (after
// the messages already relayed) or in a trailers-only answer (when the
// backend had answered nothing yet), not with RST_STREAM or the
// connection's end, which a client would read as INTERNAL or as a
// transport failure.
func TestGRPCBrokenStreamRawFrames(t *testing.T) {
	t.Parallel()
	open := func(t *testing.T, backend string) (*rawH2, string) {
		p := config.Pool{Name: "grpc", Balance: "round_robin", UpstreamHTTP2: true,
			Backends: []config.Backend{{Address: backend}}}
		cfg := oneListener(p)
		cfg.Listeners[0].H2C = true
		s := startSluice(t, cfg)
		return dialRawH2(t, s.Addr("public"), nil), s.Addr("public")
	}
	head := func(authority, method string) []hf {
		return []hf{{":method", "POST"}, {":scheme", "http"}, {":authority", authority},
			{":path", "/grpc.testing.TestService/" + method}, {"content-type", "application/grpc"}, {"te", "trailers"}}
	}
	check := func(t *testing.T, s *rawGRPCStream, wantHeaders int) {
		t.Helper()
		tr := s.last()
		switch {
		case !s.ended || s.reset || len(s.headers) != wantHeaders || tr["grpc-status"] != "14":
			t.Errorf("the stream ended with frames\n\t%s\nwant %d HEADERS, the last ending the stream with grpc-status 14",
				strings.Join(s.frames, "\n\t"), wantHeaders)
		case s.headers[0][":status"] != "200":
			t.Errorf("the answer's :status %q, want 200 (frames\n\t%s)", s.headers[0][":status"], strings.Join(s.frames, "\n\t"))
		case tr["grpc-message"] == "":
			t.Errorf("grpc-status 14 without grpc-message (frames\n\t%s)", strings.Join(s.frames, "\n\t"))
		default:
			t.Logf("frames:\n\t%s", strings.Join(s.frames, "\n\t"))
		}
	}

	// afterAMessage opens a call to method with msg (keepOpen: the
	// client's side stays open), kills the backend once the first answer
	// came, and checks that the call then ends with trailers.
	afterAMessage := func(t *testing.T, method, msg string, keepOpen bool) {
		addr, _, stop := startGRPCBackend(t)
		h, authority := open(t, addr)
		sid := h.send(head(authority, method), []string{msg}, keepOpen)
		s := &rawGRPCStream{}
		s.read(h, sid, func(s *rawGRPCStream) bool { return s.data >= 5 }, 10*time.Second)
		if s.data < 5 || s.ended || s.reset {
			t.Fatalf("before the kill: frames\n\t%s\nwant the response's HEADERS and its first message", strings.Join(s.frames, "\n\t"))
		}
		stop()
		s.read(h, sid, nil, 10*time.Second)
		check(t, s, 2)
	}
	t.Run("server stream, after a message: trailers", func(t *testing.T) {
		afterAMessage(t, "StreamingOutputCall", grpcFrame(t, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}, Payload: &testpb.Payload{}}), false)
	})
	t.Run("client stream, before any answer: trailers-only", func(t *testing.T) {
		first := make(chan struct{})
		addr, _, stop := startGRPCBackendWith(t, "http", firstMessageSignal(first))
		h, authority := open(t, addr)
		msg := grpcFrame(t, &testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}})
		sid := h.send(head(authority, "StreamingInputCall"), []string{msg}, true)
		waitFirst(t, first)
		stop()
		s := &rawGRPCStream{}
		s.read(h, sid, nil, 10*time.Second)
		check(t, s, 1)
	})
	t.Run("bidi stream, after an echo: trailers", func(t *testing.T) {
		afterAMessage(t, "FullDuplexCall", grpcFrame(t, &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("echo")}}), true)
	})
}
