package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP trace receiver in the test: a gRPC server of the
// collector's TraceService, or an HTTP server of POST /v1/traces with
// protobuf bodies. It keeps every span it receives with its resource.
type otlpReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	Addr string

	mu    sync.Mutex
	spans []receivedSpan
	posts int // requests (gRPC calls or HTTP posts) received
}

// receivedSpan is one span and the service.name of its resource.
type receivedSpan struct {
	Service string
	*tracepb.Span
}

// startOTLP starts a receiver speaking protocol ("grpc" or "http") on a
// free 127.0.0.1 port; it stops when the test ends.
func startOTLP(t *testing.T, protocol string) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{Addr: ln.Addr().String()}
	switch protocol {
	case "grpc":
		gs := grpc.NewServer()
		collectorpb.RegisterTraceServiceServer(gs, r)
		go gs.Serve(ln)
		t.Cleanup(gs.Stop)
	case "http":
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
			body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
			var in collectorpb.ExportTraceServiceRequest
			if err == nil {
				err = proto.Unmarshal(body, &in)
			}
			if err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
				http.Error(w, fmt.Sprintf("content type %q, error %v", req.Header.Get("Content-Type"), err), http.StatusBadRequest)
				return
			}
			r.Export(req.Context(), &in)
			out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(out)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	default:
		t.Fatalf("no OTLP protocol %q", protocol)
	}
	return r
}

// Export implements the collector's TraceService.
func (r *otlpReceiver) Export(_ context.Context, in *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.posts++
	for _, rs := range in.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.spans = append(r.spans, receivedSpan{Service: service, Span: sp})
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Spans returns what was received so far.
func (r *otlpReceiver) Spans() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

// attr returns a span attribute (or event attribute) as a string.
func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue
		case *commonpb.AnyValue_IntValue:
			return fmt.Sprint(v.IntValue)
		}
		return kv.Value.String()
	}
	return ""
}

// traceparent is a parsed W3C traceparent value.
type traceparent struct{ TraceID, SpanID, Flags string }

func parseTraceparent(t *testing.T, v string) traceparent {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		t.Fatalf("traceparent %q is not version 00 with a trace id, a span id and flags", v)
	}
	return traceparent{parts[1], parts[2], parts[3]}
}

// tracingYAML is a config with listener "public" (h2c on) whose default
// pool "web" holds live, and whose requests with X-Flaky: 1 go to pool
// "flaky": dead first, then live. Tracing exports to endpoint.
func tracingYAML(protocol, endpoint, live, dead string) string {
	return fmt.Sprintf(`listeners:
  - name: public
    address: "127.0.0.1:0"
    h2c: true
    routes:
      - {headers: {X-Flaky: "1"}, pool: flaky}
    pool: web
pools:
  - name: web
    backends: [{address: %q}]
  - name: flaky
    balance: round_robin
    backends: [{address: %q}, {address: %q}]
    retries: {num_retries: 1, retry_on: [connect_failure]}
admin:
  address: "127.0.0.1:0"
tracing:
  otlp_endpoint: %q
  protocol: %s
  sample_ratio: 0
  service_name: edge-test
shutdown_timeout: 10s
`, live, dead, live, endpoint, protocol)
}

// TestTracingOTLP runs the binary with tracing on and an OTLP receiver in
// the test (over gRPC and over HTTP): requests whose traceparent is sampled
// yield one span each, a child of the client's span, with the client's
// trace id; the backend receives sluice's span as its parent (HTTP/1.1 and
// HTTP/2 clients alike); a retry is an event on the span; with
// sample_ratio 0, requests without a sampled parent export nothing; the
// access log carries the trace id; shutdown flushes what is queued.
func TestTracingOTLP(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			rcv := startOTLP(t, protocol)
			be := startBackend(t, "b1")
			dead := "http://" + testenv.DeadAddr(t)
			p, _, addr, _ := runConfig(t, tracingYAML(protocol, rcv.Addr, be.URL(), dead))
			base := "http://" + addr
			h1c, h2c := newClient(t), h2cClient(t)

			// send makes a request with the given trace context fields and
			// returns the traceparent and tracestate the backend received.
			send := func(c *http.Client, path, parent, state string) (string, string) {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, base+strings.TrimPrefix(path, "/flaky"), nil)
				if strings.HasPrefix(path, "/flaky") {
					req.Header.Set("X-Flaky", "1")
				}
				if parent != "" {
					req.Header.Set("Traceparent", parent)
				}
				if state != "" {
					req.Header.Set("Tracestate", state)
				}
				r := do(t, c, req)
				if r.Status != 200 {
					t.Fatalf("GET %s: status %d, body %q", path, r.Status, r.Body)
				}
				e := parseEcho(t, r.Body)
				return e.Headers.Get("Traceparent"), e.Headers.Get("Tracestate")
			}

			const (
				sampled1   = "4bf92f3577b34da6a3ce929d0e0e4736"
				sampled2   = "0af7651916cd43dd8448eb211c80319c"
				unsampled  = "1234567890abcdef1234567890abcdef"
				flakyA     = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
				flakyB     = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
				clientSpan = "00f067aa0ba902b7"
			)
			// HTTP/1.1, sampled parent with a tracestate.
			got, state := send(h1c, "/echo", "00-"+sampled1+"-"+clientSpan+"-01", "congo=t61rcWkgMzE")
			tp1 := parseTraceparent(t, got)
			if tp1.TraceID != sampled1 || tp1.SpanID == clientSpan || tp1.Flags != "01" {
				t.Errorf("HTTP/1.1: backend got traceparent %q, want trace %s, a span of sluice's (not %s), sampled", got, sampled1, clientSpan)
			}
			if state != "congo=t61rcWkgMzE" {
				t.Errorf("HTTP/1.1: backend got tracestate %q, want the client's", state)
			}
			// HTTP/2 (h2c), sampled parent.
			got, _ = send(h2c, "/echo", "00-"+sampled2+"-"+clientSpan+"-01", "")
			tp2 := parseTraceparent(t, got)
			if tp2.TraceID != sampled2 || tp2.SpanID == clientSpan || tp2.Flags != "01" {
				t.Errorf("HTTP/2: backend got traceparent %q, want trace %s and a span of sluice's, sampled", got, sampled2)
			}
			// A parent that is not sampled, and no parent at all (ratio 0):
			// the backend still gets sluice's span, not sampled.
			got, _ = send(h1c, "/echo", "00-"+unsampled+"-"+clientSpan+"-00", "")
			if tp := parseTraceparent(t, got); tp.TraceID != unsampled || tp.SpanID == clientSpan || tp.Flags != "00" {
				t.Errorf("unsampled parent: backend got traceparent %q, want trace %s, sluice's span, not sampled", got, unsampled)
			}
			var rootTrace string
			for _, c := range []*http.Client{h1c, h2c} {
				got, _ = send(c, "/echo", "", "")
				tp := parseTraceparent(t, got)
				if tp.Flags != "00" {
					t.Errorf("no parent, sample_ratio 0: backend got traceparent %q, want a new trace, not sampled", got)
				}
				rootTrace = tp.TraceID
			}
			// Pool flaky: one of two requests meets the dead backend first.
			send(h1c, "/flaky/echo", "00-"+flakyA+"-"+clientSpan+"-01", "")
			send(h1c, "/flaky/echo", "00-"+flakyB+"-"+clientSpan+"-01", "")

			p.stop(syscall.SIGTERM)
			// Shutdown flushed: everything is here now, nothing more comes.
			spans := rcv.Spans()
			byTrace := map[string]receivedSpan{}
			for _, s := range spans {
				id := hex.EncodeToString(s.TraceId)
				if _, dup := byTrace[id]; dup {
					t.Errorf("two spans of trace %s: want one span per request", id)
				}
				byTrace[id] = s
			}
			for _, id := range []string{unsampled, rootTrace} {
				if _, ok := byTrace[id]; ok {
					t.Errorf("trace %s was exported: a request without a sampled parent must not be at sample_ratio 0", id)
				}
			}
			if len(spans) != 4 {
				t.Errorf("received %d spans, want 4 (the sampled requests)", len(spans))
			}

			for _, c := range []struct {
				trace    string
				sentTo   traceparent
				protocol string
			}{{sampled1, tp1, "1.1"}, {sampled2, tp2, "2"}} {
				s, ok := byTrace[c.trace]
				if !ok {
					t.Errorf("no span of trace %s", c.trace)
					continue
				}
				checks := []struct{ what, got, want string }{
					{"parent span id", hex.EncodeToString(s.ParentSpanId), clientSpan},
					{"span id (the backend's parent)", hex.EncodeToString(s.SpanId), c.sentTo.SpanID},
					{"kind", s.Kind.String(), tracepb.Span_SPAN_KIND_SERVER.String()},
					{"name", s.Name, "GET"},
					{"service.name", s.Service, "edge-test"},
					{"sluice.listener", attr(s.Attributes, "sluice.listener"), "public"},
					{"sluice.route", attr(s.Attributes, "sluice.route"), "default"},
					{"sluice.pool", attr(s.Attributes, "sluice.pool"), "web"},
					{"sluice.backend", attr(s.Attributes, "sluice.backend"), be.URL()},
					{"sluice.attempts", attr(s.Attributes, "sluice.attempts"), "1"},
					{"http.response.status_code", attr(s.Attributes, "http.response.status_code"), "200"},
					{"url.path", attr(s.Attributes, "url.path"), "/echo"},
					{"network.protocol.version", attr(s.Attributes, "network.protocol.version"), c.protocol},
				}
				for _, ck := range checks {
					if ck.got != ck.want {
						t.Errorf("span of trace %s: %s = %q, want %q", c.trace, ck.what, ck.got, ck.want)
					}
				}
			}

			retried := 0
			for _, id := range []string{flakyA, flakyB} {
				s, ok := byTrace[id]
				if !ok {
					t.Errorf("no span of trace %s", id)
					continue
				}
				if got := attr(s.Attributes, "sluice.route"); got != "/ X-Flaky=1" {
					t.Errorf("flaky span: sluice.route %q, want %q", got, "/ X-Flaky=1")
				}
				if attr(s.Attributes, "sluice.attempts") != "2" {
					if len(s.Events) != 0 {
						t.Errorf("span of one attempt has events %v, want none", s.Events)
					}
					continue
				}
				retried++
				if len(s.Events) != 1 || s.Events[0].Name != "retry" {
					t.Errorf("span of two attempts: events %v, want one retry", s.Events)
					continue
				}
				ev := s.Events[0].Attributes
				if attr(ev, "sluice.backend") != dead || attr(ev, "sluice.outcome") != "connect_failure" || attr(ev, "sluice.attempt") != "1" {
					t.Errorf("retry event: backend %q outcome %q attempt %q, want %s, connect_failure, 1",
						attr(ev, "sluice.backend"), attr(ev, "sluice.outcome"), attr(ev, "sluice.attempt"), dead)
				}
				if attr(s.Attributes, "sluice.backend") != be.URL() {
					t.Errorf("retried span: sluice.backend %q, want the one that answered, %s", attr(s.Attributes, "sluice.backend"), be.URL())
				}
			}
			if retried != 1 {
				t.Errorf("%d of the two flaky requests were retried, want exactly 1 (round robin over a dead and a live backend)", retried)
			}

			// The access log has the trace id of every request, sampled or
			// not.
			log := p.Stdout.String()
			for _, id := range []string{sampled1, sampled2, unsampled, rootTrace} {
				if !strings.Contains(log, `"trace_id":"`+id+`"`) {
					t.Errorf("access log has no line with trace_id %s", id)
				}
			}
		})
	}
}

// TestTraceContextUntouchedWithoutTracing: without a tracing block, the
// client's traceparent and tracestate reach the backend exactly as sent
// (valid or not), over HTTP/1.1 and HTTP/2, and the access log has no
// trace id.
func TestTraceContextUntouchedWithoutTracing(t *testing.T) {
	be := startBackend(t, "b1")
	cfg := oneListener(poolOf("web", be))
	cfg.Listeners[0].H2C = true
	s := startSluice(t, cfg)
	for _, tc := range []struct {
		name   string
		client *http.Client
		parent string
	}{
		{"HTTP/1.1", newClient(t), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"HTTP/2", h2cClient(t), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"invalid traceparent", newClient(t), "not-a-trace-context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.URL("public")+"/echo", nil)
			req.Header.Set("Traceparent", tc.parent)
			req.Header["Tracestate"] = []string{"rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"}
			r := do(t, tc.client, req)
			e := parseEcho(t, r.Body)
			if got := e.Headers.Get("Traceparent"); got != tc.parent {
				t.Errorf("backend got traceparent %q, want %q untouched", got, tc.parent)
			}
			got := strings.Join(e.Headers.Values("Tracestate"), ",")
			if got != "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" {
				t.Errorf("backend got tracestate %q, want both fields untouched", got)
			}
		})
	}
	s.Stop()
	for _, line := range strings.Split(strings.TrimSpace(s.access.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		if _, ok := e["trace_id"]; ok {
			t.Errorf("access log line has a trace_id with tracing off: %s", line)
		}
	}
}

// TestTracingReloadSwapsProvider: a reload that adds the tracing block
// turns tracing on; one that changes it (another collector, another
// protocol) sends the spans of later requests to the new collector while
// the old one gets what began before; shutdown flushes both.
func TestTracingReloadSwapsProvider(t *testing.T) {
	t.Parallel()
	rcv1, rcv2 := startOTLP(t, "grpc"), startOTLP(t, "http")
	be := startBackend(t, "b1")
	dead := "http://" + testenv.DeadAddr(t)
	v1 := tracingYAML("grpc", rcv1.Addr, be.URL(), dead)
	v2 := tracingYAML("http", rcv2.Addr, be.URL(), dead)
	v0 := v1[:strings.Index(v1, "tracing:\n")] + "shutdown_timeout: 10s\n"
	p, file, addr, _ := runConfig(t, v0)
	c := newClient(t)
	n := 0
	// send makes a request with a new sampled trace id and returns it and
	// whether the backend's traceparent was sluice's rather than the
	// client's.
	send := func() (string, bool) {
		t.Helper()
		n++
		id := fmt.Sprintf("%032x", 0xabc000+n)
		parent := "00-" + id + "-00f067aa0ba902b7-01"
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/echo", nil)
		req.Header.Set("Traceparent", parent)
		r := do(t, c, req)
		return id, parseEcho(t, r.Body).Headers.Get("Traceparent") != parent
	}
	reloads := func() int { return strings.Count(p.Stderr.String(), `kind=reload_ok`) }
	reload := func(yaml string, want int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(withEngineYAML(yaml)), 0o644); err != nil {
			t.Fatal(err)
		}
		p.signal(syscall.SIGHUP)
		eventually(t, 10*time.Second, "the reload is logged", func() bool { return reloads() == want })
	}

	off, rewritten := send()
	if rewritten {
		t.Errorf("without tracing the backend's traceparent was rewritten")
	}
	reload(v1, 1)
	if !strings.Contains(p.Stderr.String(), `kind=reload_ok reason="tracing: on"`) {
		t.Errorf("the reload_ok event does not say that tracing went on")
	}
	on1, rewritten := send()
	if !rewritten {
		t.Errorf("after the reload that turned tracing on, the backend got the client's traceparent")
	}
	reload(v2, 2)
	on2, _ := send()
	p.stop(syscall.SIGTERM)
	traces := func(r *otlpReceiver) map[string]bool {
		m := map[string]bool{}
		for _, s := range r.Spans() {
			m[hex.EncodeToString(s.TraceId)] = true
		}
		return m
	}
	got1, got2 := traces(rcv1), traces(rcv2)
	for _, c := range []struct {
		what     string
		got      bool
		want     bool
		receiver string
	}{
		{"the request before tracing", got1[off] || got2[off], false, "either"},
		{"the request after the first reload", got1[on1], true, "the gRPC collector"},
		{"the request after the first reload", got2[on1], false, "the HTTP collector"},
		{"the request after the second reload", got2[on2], true, "the HTTP collector"},
		{"the request after the second reload", got1[on2], false, "the gRPC collector"},
	} {
		if c.got != c.want {
			t.Errorf("%s: exported to %s = %v, want %v", c.what, c.receiver, c.got, c.want)
		}
	}
}
