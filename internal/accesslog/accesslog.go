// Package accesslog writes one line per request (JSON or Apache combined)
// from a goroutine of its own, so that a slow disk or terminal never slows
// the request path: requests hand entries to a bounded queue and, when it is
// full, the entry is dropped and counted rather than waited for.
package accesslog

import (
	"context"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Entry is one request. Path is the request target's path and Query its
// query as the client sent it, without the "?" ("" when there is none): the
// combined format writes the request line's target back as Path?Query, JSON
// has them as "path" and "query". docs/config.md lists every field of both
// formats.
type Entry struct {
	Time     time.Time
	Listener string
	Client   string
	Method   string
	Host     string
	Path     string
	Query    string
	// Proto is the client's protocol, "HTTP/1.1" when empty.
	Proto     string
	UserAgent string
	Pool      string
	// Backend is the backend that answered, or the last one tried ("":
	// none was).
	Backend string
	Status  int
	// Bytes is the response body bytes sent to the client; BytesIn the
	// request body bytes read from it.
	Bytes, BytesIn int64
	Duration       time.Duration
	RequestID      string
	// Tries is the number of attempts (1 + retries; 0: no backend tried).
	Tries int
	// Connect and Header are the last attempt's upstream connect time (0
	// on a reused connection) and time to the response head (0: none
	// came); written only when a backend was tried.
	Connect, Header time.Duration
	// TLS is the client connection's TLS version ("1.3"; "": plain).
	TLS string
	// ClientSubject is the subject of the client's verified certificate
	// ("CN=alice,O=Example"; "": none, or no client_ca).
	ClientSubject string
	// TraceID is the request's trace id in hex ("": tracing off).
	TraceID string
	// End says why a layer-4 connection (Proto ProtoTCP) ended: client,
	// backend, idle, error, shutdown, or no_route, rate_limited,
	// no_backend when it reached none. Such an entry has no method, path, status or request
	// id; Host is the server name its ClientHello asked for, Bytes what
	// went to the client and BytesIn what came from it.
	End string
}

// ProtoTCP is the Proto of a layer-4 connection's entry.
const ProtoTCP = "TCP"

// Logger writes entries. A nil *Logger discards them, so callers need not
// check whether the access log is on.
type Logger struct {
	w       io.Writer
	format  string
	queue   chan Entry
	dropped atomic.Uint64
	done    chan struct{}

	// open, when set, opens the destination again (a file after log
	// rotation); Reopen asks Run to call it.
	open   func() (io.Writer, error)
	reopen chan chan error
}

// New returns a logger writing format ("json" or "combined") to w. Run must
// be called for anything to be written.
func New(w io.Writer, format string) *Logger {
	return &Logger{w: w, format: format, queue: make(chan Entry, 4096), done: make(chan struct{})}
}

// NewFile returns a logger appending to the file at path, which Reopen
// opens again (after logrotate renamed it).
func NewFile(path, format string) (*Logger, error) {
	open := func() (io.Writer, error) {
		return os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	}
	w, err := open()
	if err != nil {
		return nil, err
	}
	l := New(w, format)
	l.open, l.reopen = open, make(chan chan error)
	return l, nil
}

// Reopen makes Run close the file and open it again, after the entries
// queued before; it returns the open error. Without a file it does nothing.
func (l *Logger) Reopen() error {
	if l == nil || l.open == nil {
		return nil
	}
	errc := make(chan error, 1)
	select {
	case l.reopen <- errc:
		return <-errc
	case <-l.done:
		return nil
	}
}

// Log queues e; it never blocks.
func (l *Logger) Log(e *Entry) {
	if l == nil {
		return
	}
	select {
	case l.queue <- *e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped returns how many entries were dropped because the queue was full.
func (l *Logger) Dropped() uint64 {
	if l == nil {
		return 0
	}
	return l.dropped.Load()
}

// Run writes queued entries until ctx is done, then writes what is still
// queued and returns.
func (l *Logger) Run(ctx context.Context) {
	defer close(l.done)
	var buf []byte
	write := func(e *Entry) {
		buf = buf[:0]
		if l.format == "combined" {
			buf = appendCombined(buf, e)
		} else {
			buf = appendJSON(buf, e)
		}
		l.w.Write(buf)
	}
	for {
		select {
		case e := <-l.queue:
			write(&e)
		case errc := <-l.reopen:
			for len(l.queue) > 0 { // what was queued before goes to the old file
				e := <-l.queue
				write(&e)
			}
			w, err := l.open()
			if err == nil {
				if c, ok := l.w.(io.Closer); ok {
					c.Close()
				}
				l.w = w
			}
			errc <- err
		case <-ctx.Done():
			for {
				select {
				case e := <-l.queue:
					write(&e)
				default:
					if c, ok := l.w.(io.Closer); ok && l.open != nil {
						c.Close()
					}
					return
				}
			}
		}
	}
}

// Wait returns when Run has returned.
func (l *Logger) Wait() { <-l.done }

func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","listener":`...)
	b = appendString(b, e.Listener)
	b = append(b, `,"client":`...)
	b = appendString(b, e.Client)
	b = append(b, `,"method":`...)
	b = appendString(b, e.Method)
	b = append(b, `,"host":`...)
	b = appendString(b, e.Host)
	b = append(b, `,"path":`...)
	b = appendString(b, e.Path)
	b = append(b, `,"query":`...)
	b = appendString(b, e.Query)
	if e.Proto != "" {
		b = append(b, `,"proto":`...)
		b = appendString(b, e.Proto)
	}
	b = append(b, `,"user_agent":`...)
	b = appendString(b, e.UserAgent)
	b = append(b, `,"pool":`...)
	b = appendString(b, e.Pool)
	b = append(b, `,"backend":`...)
	b = appendString(b, e.Backend)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMs(b, e.Duration)
	b = append(b, `,"tries":`...)
	b = strconv.AppendInt(b, int64(e.Tries), 10)
	if e.Backend != "" {
		b = append(b, `,"upstream_connect_ms":`...)
		b = appendMs(b, e.Connect)
		if e.Header > 0 {
			b = append(b, `,"upstream_header_ms":`...)
			b = appendMs(b, e.Header)
		}
	}
	if e.TLS != "" {
		b = append(b, `,"tls_version":`...)
		b = appendString(b, e.TLS)
	}
	if e.ClientSubject != "" {
		b = append(b, `,"client_subject":`...)
		b = appendString(b, e.ClientSubject)
	}
	b = append(b, `,"request_id":`...)
	b = appendString(b, e.RequestID)
	if e.TraceID != "" {
		b = append(b, `,"trace_id":`...)
		b = appendString(b, e.TraceID)
	}
	if e.Proto == ProtoTCP {
		b = append(b, `,"end":`...)
		b = appendString(b, e.End)
	}
	return append(b, "}\n"...)
}

// appendMs writes d in milliseconds with three decimals (microseconds).
func appendMs(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d)/1e6, 'f', 3, 64)
}

// appendCombined writes the Apache/NGINX combined format, then the request
// id and the duration in seconds (as before these fields existed), then
// key=value fields: pool, backend, tries, upstream connect and header
// times in seconds, request body bytes, TLS version and trace id ("-" when
// not applicable; pool and backend quoted), and with a verified client
// certificate its subject (quoted; absent without one).
func appendCombined(b []byte, e *Entry) []byte {
	b = append(b, orDash(e.Client)...)
	b = append(b, " - - ["...)
	b = e.Time.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, `] "`...)
	switch e.Proto {
	case ProtoTCP:
		// A connection: "- SNI TCP" in place of a request line.
		b = append(b, "- "...)
		b = appendEscaped(b, orDash(e.Host))
		b = append(b, " TCP"...)
	default:
		b = appendEscaped(b, e.Method)
		b = append(b, ' ')
		b = appendEscaped(b, e.Path)
		if e.Query != "" {
			b = append(b, '?')
			b = appendEscaped(b, e.Query)
		}
		b = append(b, ' ')
		if e.Proto == "" {
			b = append(b, "HTTP/1.1"...)
		} else {
			b = appendEscaped(b, e.Proto)
		}
	}
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, ` "-" "`...)
	b = appendEscaped(b, e.UserAgent)
	b = append(b, `" `...)
	b = append(b, orDash(e.RequestID)...)
	b = append(b, ' ')
	b = appendSeconds(b, e.Duration)
	b = append(b, " pool="...)
	b = appendQuoted(b, e.Pool)
	b = append(b, " backend="...)
	b = appendQuoted(b, e.Backend)
	b = append(b, " tries="...)
	b = strconv.AppendInt(b, int64(e.Tries), 10)
	b = append(b, " connect="...)
	if e.Backend != "" {
		b = appendSeconds(b, e.Connect)
	} else {
		b = append(b, '-')
	}
	b = append(b, " header="...)
	if e.Header > 0 {
		b = appendSeconds(b, e.Header)
	} else {
		b = append(b, '-')
	}
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, " tls="...)
	b = append(b, orDash(e.TLS)...)
	b = append(b, " trace_id="...)
	b = append(b, orDash(e.TraceID)...)
	if e.Proto == ProtoTCP {
		b = append(b, " end="...)
		b = append(b, orDash(e.End)...)
	}
	if e.ClientSubject != "" {
		b = append(b, " client_subject="...)
		b = appendQuoted(b, e.ClientSubject)
	}
	return append(b, '\n')
}

// appendSeconds writes d in seconds with three decimals.
func appendSeconds(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, d.Seconds(), 'f', 3, 64)
}

// appendQuoted writes s quoted and escaped, or - when it is empty.
func appendQuoted(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appendEscaped writes s with quotes, backslashes and control bytes
// escaped, so a hostile path cannot forge a log line.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, `\x`...)
			b = append(b, hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}

const hex = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, `\u00`...)
				b = append(b, hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
