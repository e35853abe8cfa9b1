package accesslog

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-lb/sluice/internal/testenv"
)

type syncBuf = testenv.Buffer

func TestJSONLine(t *testing.T) {
	var out syncBuf
	l := New(&out, "json")
	ctx, cancel := context.WithCancel(t.Context())
	go l.Run(ctx)
	l.Log(&Entry{Time: time.Unix(0, 0), Client: "127.0.0.1", Method: "GET", Path: "/a\"b\n\xff", Query: "q=1&r=%22",
		Host: "h", UserAgent: "curl", Pool: "web", Backend: "http://127.0.0.1:8081", Status: 200,
		Bytes: 12, Duration: 1500 * time.Microsecond, RequestID: "id1", Tries: 1})
	cancel()
	l.Wait()
	var got map[string]any
	line := out.String()
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	want := map[string]any{"client": "127.0.0.1", "method": "GET", "path": "/a\"b\n\ufffd", "query": "q=1&r=%22", "status": 200.0,
		"backend": "http://127.0.0.1:8081", "request_id": "id1", "duration_ms": 1.5, "bytes": 12.0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("want exactly one line, got %q", line)
	}
}

func TestCombinedEscapes(t *testing.T) {
	got := string(appendCombined(nil, &Entry{Time: time.Unix(0, 0).UTC(), Method: "GET", Path: "/x\"\n", Status: 404, UserAgent: "a\"b"}))
	want := `- - - [01/Jan/1970:00:00:00 +0000] "GET /x\"\x0a HTTP/1.1" 404 0 "-" "a\"b" - 0.000` +
		` pool=- backend=- tries=0 connect=- header=- bytes_in=0 tls=- trace_id=-` + "\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// full is an entry with every field set: a TLS request over HTTP/2 that a
// backend answered on its second try, traced.
var full = Entry{Time: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Listener: "public", Client: "127.0.0.1",
	Method: "POST", Host: "example.com", Path: "/up", Query: "a=1", Proto: "HTTP/2.0", UserAgent: "curl/8",
	Pool: "web", Backend: "http://127.0.0.1:8081", Status: 201, Bytes: 12, BytesIn: 34,
	Duration: 2500 * time.Microsecond, RequestID: "id7", Tries: 2, Connect: 300 * time.Microsecond,
	Header: 1200 * time.Microsecond, TLS: "1.3", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}

func TestFullEntry(t *testing.T) {
	var got map[string]any
	line := appendJSON(nil, &full)
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	want := map[string]any{"time": "2026-03-04T05:06:07Z", "listener": "public", "client": "127.0.0.1",
		"method": "POST", "host": "example.com", "path": "/up", "query": "a=1", "proto": "HTTP/2.0",
		"user_agent": "curl/8", "pool": "web", "backend": "http://127.0.0.1:8081", "status": 201.0,
		"bytes": 12.0, "bytes_in": 34.0, "duration_ms": 2.5, "tries": 2.0, "upstream_connect_ms": 0.3,
		"upstream_header_ms": 1.2, "tls_version": "1.3", "request_id": "id7",
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON fields (-want +got):\n%s", diff)
	}

	comb := string(appendCombined(nil, &full))
	wantComb := `127.0.0.1 - - [04/Mar/2026:05:06:07 +0000] "POST /up?a=1 HTTP/2.0" 201 12 "-" "curl/8" id7 0.003` +
		` pool="web" backend="http://127.0.0.1:8081" tries=2 connect=0.000 header=0.001 bytes_in=34 tls=1.3` +
		` trace_id=4bf92f3577b34da6a3ce929d0e0e4736` + "\n"
	if comb != wantComb {
		t.Errorf("combined:\ngot  %q\nwant %q", comb, wantComb)
	}
}

// TestClientSubject: a verified client certificate's subject is written
// after tls_version in JSON and as the last combined field, quoted and
// escaped; absent without one.
func TestClientSubject(t *testing.T) {
	e := full
	e.ClientSubject = `OU=ops \"blue\",O=Example\, Inc.,CN=alice`
	var got map[string]any
	if err := json.Unmarshal(appendJSON(nil, &e), &got); err != nil {
		t.Fatal(err)
	}
	if got["client_subject"] != e.ClientSubject {
		t.Errorf("JSON client_subject %v, want %q", got["client_subject"], e.ClientSubject)
	}
	comb := string(appendCombined(nil, &e))
	if want := ` trace_id=4bf92f3577b34da6a3ce929d0e0e4736 client_subject="OU=ops \\\"blue\\\",O=Example\\, Inc.,CN=alice"` + "\n"; !strings.HasSuffix(comb, want) {
		t.Errorf("combined %q does not end with %q", comb, want)
	}
	if strings.Contains(string(appendJSON(nil, &full)), "client_subject") || strings.Contains(string(appendCombined(nil, &full)), "client_subject") {
		t.Error("client_subject written for an entry without one")
	}
}

// TestJSONEmptyQuery: "query" is always there, empty without a query.
func TestJSONEmptyQuery(t *testing.T) {
	var got map[string]any
	line := appendJSON(nil, &Entry{Method: "GET", Path: "/p"})
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("line %q is not JSON: %v", line, err)
	}
	if q, ok := got["query"]; !ok || q != "" {
		t.Errorf("query = %v (present %v), want \"\" in %s", q, ok, line)
	}
}

// TestCombinedQuery: the request line carries the query as the client sent
// it, escaped like the path; no "?" without a query.
func TestCombinedQuery(t *testing.T) {
	for _, tc := range []struct {
		path, query, want string
	}{
		{"/p", "q=1", `"GET /p?q=1 HTTP/1.1"`},
		{"/p", "q=a%20b&r=2", `"GET /p?q=a%20b&r=2 HTTP/1.1"`},
		{"/p", "", `"GET /p HTTP/1.1"`},
		{"/p", "x=\"\r\n", `"GET /p?x=\"\x0d\x0a HTTP/1.1"`},
	} {
		got := string(appendCombined(nil, &Entry{Time: time.Unix(0, 0).UTC(), Method: "GET", Path: tc.path, Query: tc.query, Status: 200}))
		if !strings.Contains(got, tc.want) {
			t.Errorf("path %q query %q: line %q does not contain %s", tc.path, tc.query, got, tc.want)
		}
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var l *Logger
	l.Log(&Entry{})
	if l.Dropped() != 0 {
		t.Errorf("nil logger dropped %d", l.Dropped())
	}
}

func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := NewFile(path, "json")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	go l.Run(ctx)
	l.Log(&Entry{Path: "/before"})
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	l.Log(&Entry{Path: "/after"})
	cancel()
	l.Wait()
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), `"/before"`) || strings.Contains(string(old), `"/after"`) {
		t.Errorf("rotated file = %q, want only the entry from before", old)
	}
	if !strings.Contains(string(cur), `"/after"`) || strings.Contains(string(cur), `"/before"`) {
		t.Errorf("new file = %q, want only the entry from after", cur)
	}
}

// TestConnectionLine: a layer-4 connection's line has its bytes each way
// and why it ended, in JSON and combined.
func TestConnectionLine(t *testing.T) {
	e := &Entry{Time: time.Unix(0, 0).UTC(), Listener: "l4", Client: "192.0.2.1:5000", Host: "db.example.com",
		Proto: ProtoTCP, Pool: "db", Backend: "tcp://10.0.0.1:5432", Bytes: 300, BytesIn: 42, End: "client",
		Duration: 1500 * time.Millisecond, Tries: 1}
	js := string(appendJSON(nil, e))
	for _, want := range []string{`"proto":"TCP"`, `"host":"db.example.com"`, `"bytes":300`, `"bytes_in":42`, `"end":"client"`} {
		if !strings.Contains(js, want) {
			t.Errorf("JSON line lacks %s: %s", want, js)
		}
	}
	if js := string(appendJSON(nil, &Entry{Method: "GET", Path: "/"})); strings.Contains(js, `"end"`) {
		t.Errorf("an HTTP line has an end: %s", js)
	}
	got := string(appendCombined(nil, e))
	for _, want := range []string{`192.0.2.1:5000 - - [01/Jan/1970:00:00:00 +0000] "- db.example.com TCP" 0 300 `,
		` pool="db" backend="tcp://10.0.0.1:5432" tries=1 `, ` bytes_in=42 `, ` end=client` + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("combined = %q, want it to hold %q", got, want)
		}
	}
}
