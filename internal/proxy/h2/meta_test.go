package h2

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestMetaReaderAsXNet decodes header blocks with metaReader and with
// x/net's Framer under ReadMetaHeaders (what it replaces) and compares:
// the fields, Truncated, and the kind of error (connection or stream, and
// its code).
func TestMetaReaderAsXNet(t *testing.T) {
	const max = 1024
	req := []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a.test"}
	with := func(extra ...string) []string { return append(append([]string{}, req...), extra...) }
	cases := []struct {
		name   string
		fields []string
		split  int    // > 0: the block in CONTINUATION frames of this many bytes
		raw    []byte // instead of fields: this block
	}{
		{name: "plain", fields: with("accept", "*/*", "x-a", "1", "x-a", "2")},
		{name: "continuations", fields: with("x-long", strings.Repeat("v", 300)), split: 7},
		{name: "uppercase name", fields: with("X-Up", "1")},
		{name: "value with LF", fields: with("x-bad", "a\nb")},
		{name: "empty name", fields: with("", "1")},
		{name: "pseudo after regular", fields: []string{":method", "GET", "x-a", "1", ":path", "/"}},
		{name: "unknown pseudo", fields: with(":foo", "1")},
		{name: "unknown pseudo first", fields: []string{":foo", "1", ":method", "GET"}},
		{name: "duplicate pseudo", fields: []string{":method", "GET", ":method", "POST", ":path", "/"}},
		{name: "request and response pseudos", fields: []string{":status", "200", ":method", "GET"}},
		{name: "over the list size", fields: with("x-big", strings.Repeat("b", max))},
		{name: "trailer names over the list size", fields: with("trailer", strings.Repeat("a,", 40)+"a")},
		{name: "trailer names within", fields: with("trailer", "a, b")},
		{name: "far over the list size", fields: with("x-huge", strings.Repeat("h", 4*max))},
		{name: "block far over the list size", fields: with(manyFields(100, 50)...)},
		{name: "continuation past the list size", fields: with(manyFields(30, 50)...), split: 1000},
		{name: "invalid then continuation", fields: with("X-Up", "1", "x-more", strings.Repeat("m", 100)), split: 60},
		{name: "bad hpack index", raw: []byte{0xff, 0xff, 0xff, 0x0f}},
		{name: "truncated hpack", raw: []byte{0x40, 0x05, 'a'}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var wire bytes.Buffer
			block := tc.raw
			if block == nil {
				var hb bytes.Buffer
				enc := hpack.NewEncoder(&hb)
				for i := 0; i+1 < len(tc.fields); i += 2 {
					enc.WriteField(hpack.HeaderField{Name: tc.fields[i], Value: tc.fields[i+1]})
				}
				block = hb.Bytes()
			}
			w := http2.NewFramer(&wire, nil)
			w.AllowIllegalWrites = true
			first := block
			if tc.split > 0 && len(block) > tc.split {
				first = block[:tc.split]
			}
			w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first,
				EndStream: true, EndHeaders: len(first) == len(block)})
			for rest := block[len(first):]; len(rest) > 0; {
				n := min(tc.split, len(rest))
				w.WriteContinuation(1, n == len(rest), rest[:n])
				rest = rest[n:]
			}
			w.WritePing(false, [8]byte{1}) // what follows the block

			theirs := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
			theirs.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			theirs.MaxHeaderListSize = max
			tf, terr := theirs.ReadFrame()

			ours := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
			ours.MaxHeaderListSize = max
			m := newMetaReader(ours, max)
			var of http2.Frame
			f, oerr := ours.ReadFrame()
			if oerr == nil {
				var mh *http2.MetaHeadersFrame
				if mh, oerr = m.read(f.(*http2.HeadersFrame)); oerr == nil {
					of = mh
				}
			}

			if got, want := errKind(oerr), errKind(terr); got != want {
				t.Fatalf("error %s, x/net's %s", got, want)
			}
			if terr != nil {
				return
			}
			tm, om := tf.(*http2.MetaHeadersFrame), of.(*http2.MetaHeadersFrame)
			if fmt.Sprint(om.Fields) != fmt.Sprint(tm.Fields) || om.Truncated != tm.Truncated ||
				om.StreamID != tm.StreamID || om.StreamEnded() != tm.StreamEnded() {
				t.Fatalf("got %v truncated %v, x/net's %v truncated %v", om.Fields, om.Truncated, tm.Fields, tm.Truncated)
			}
			// Both read on from the same place.
			if f, err := ours.ReadFrame(); err != nil {
				t.Fatalf("the frame after the block: %v", err)
			} else if _, ok := f.(*http2.PingFrame); !ok {
				t.Fatalf("the frame after the block: %v, want the PING", f)
			}
		})
	}
}

// manyFields is n fields of about size bytes each, names and values.
func manyFields(n, size int) []string {
	var f []string
	for i := range n {
		f = append(f, fmt.Sprintf("x-field-%d", i), strings.Repeat("v", size))
	}
	return f
}

func errKind(err error) string {
	switch err := err.(type) {
	case nil:
		return "none"
	case http2.ConnectionError:
		return "connection " + http2.ErrCode(err).String()
	case http2.StreamError:
		return fmt.Sprintf("stream %d %v", err.StreamID, err.Code)
	}
	return "other: " + err.Error()
}

// TestMetaReaderReuse: a block's frame and fields are the connection's,
// reused by the next block; what a block decoded before is not seen in
// the next.
func TestMetaReaderReuse(t *testing.T) {
	var wire, hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	w := http2.NewFramer(&wire, nil)
	for i, fields := range [][]string{
		{":method", "GET", ":path", "/a", "x-one", "1", "x-two", "2"},
		{":method", "GET", ":path", "/b"},
	} {
		hb.Reset()
		for j := 0; j < len(fields); j += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[j], Value: fields[j+1]})
		}
		w.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(1 + 2*i), BlockFragment: hb.Bytes(),
			EndStream: true, EndHeaders: true})
	}
	fr := http2.NewFramer(nil, &wire)
	m := newMetaReader(fr, 1<<20)
	var got []string
	for range 2 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		mh, err := m.read(f.(*http2.HeadersFrame))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d %s %d", mh.StreamID, mh.PseudoValue("path"), len(mh.RegularFields())))
	}
	if want := "[1 /a 2 3 /b 0]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}
