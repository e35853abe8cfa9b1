package h2

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// xnetBlock is what x/net's encoder makes of fields with no dynamic
// table: the reference sluice's own encoding must equal byte for byte.
func xnetBlock(t *testing.T, status int, fields ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	enc.SetMaxDynamicTableSizeLimit(0)
	enc.WriteField(hpack.HeaderField{Name: "x", Value: "y"}) // takes the table size update
	buf.Reset()
	if status > 0 {
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	}
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

func decodeBlock(t *testing.T, b []byte) []hpack.HeaderField {
	t.Helper()
	fs, err := hpack.NewDecoder(4096, nil).DecodeFull(b)
	if err != nil {
		t.Fatalf("decoding %x: %v", b, err)
	}
	return fs
}

func TestHpackStaticNamesAsXnet(t *testing.T) {
	// The static table, as x/net's decoder knows it: every name must be
	// found under the index x/net's encoder uses.
	seen := map[string]bool{}
	for i := 1; i <= 61; i++ {
		f := decodeBlock(t, []byte{0x80 | byte(i)})[0]
		if seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		if f.Name == ":status" {
			continue // appendStatus's, below
		}
		for _, v := range []string{"sluice", "", strings.Repeat("v", 200)} {
			got := appendField(nil, f.Name, v)
			if want := xnetBlock(t, 0, f.Name, v); !bytes.Equal(got, want) {
				t.Errorf("%s: %q: %x, x/net %x", f.Name, v, got, want)
			}
			if staticName(f.Name) == 0 {
				t.Errorf("%s is in the static table (index %d), not in staticName", f.Name, i)
			}
		}
	}
	if len(seen) != 52 {
		t.Fatalf("%d distinct static names, want 52", len(seen))
	}
}

func TestHpackFieldsRoundTrip(t *testing.T) {
	fields := []string{
		"x-request-id", "e067f6e28f93-53584",
		"date", "Sat, 05 Dec 2026 00:50:52 GMT",
		"x-long", strings.Repeat("0123456789", 40), // lengths past one byte's prefix
		"x-empty", "",
		"x-rare", "{}|^~\\`<>", // Huffman is longer: sent raw
		strings.Repeat("x-name", 30), "v",
		"content-type", "text/plain",
		"accept-encoding", "gzip, deflate", // the static table's own pair
	}
	for status := 100; status < 600; status++ {
		got := appendStatus(nil, status)
		for i := 0; i < len(fields); i += 2 {
			got = appendField(got, fields[i], fields[i+1])
		}
		if want := xnetBlock(t, status, fields...); !bytes.Equal(got, want) {
			t.Fatalf("status %d: %x, x/net %x", status, got, want)
		}
		fs := decodeBlock(t, got)
		if fs[0].Name != ":status" || fs[0].Value != statusText(status) || len(fs) != 1+len(fields)/2 {
			t.Fatalf("status %d: decoded %v", status, fs)
		}
		for i, f := range fs[1:] {
			if f.Name != fields[2*i] || f.Value != fields[2*i+1] {
				t.Fatalf("field %d: %q: %q, want %q: %q", i, f.Name, f.Value, fields[2*i], fields[2*i+1])
			}
		}
	}
}

func TestHpackInt(t *testing.T) {
	// RFC 7541 C.1's examples: 10 and 1337 with a 5-bit prefix, 42 with 8.
	for _, c := range []struct {
		n    uint
		v    uint64
		want []byte
	}{{5, 10, []byte{0x0a}}, {5, 1337, []byte{0x1f, 0x9a, 0x0a}}, {8, 42, []byte{0x2a}}, {4, 15, []byte{0x0f, 0x00}}} {
		if got := appendHpackInt(nil, c.n, 0, c.v); !bytes.Equal(got, c.want) {
			t.Errorf("%d with %d bits: %x, want %x", c.v, c.n, got, c.want)
		}
	}
}

// The connection's first header block, and the first after the client
// sets SETTINGS_HEADER_TABLE_SIZE, begin with a dynamic table size update
// to 0; no other does. A decoder told a size below 4096 may refuse a block
// without it (nghttp2 does: COMPRESSION_ERROR).
func TestHpackTableSizeUpdate(t *testing.T) {
	ts := startServer(t, &Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
	}))
	c := dial(t, ts)
	c.fr.ReadMetaHeaders = nil // the blocks as sent
	block := func(id uint32) []byte {
		t.Helper()
		c.headers(id, true, get("/")...)
		for {
			if f, ok := c.next().(*http2.HeadersFrame); ok && f.StreamID == id {
				return f.HeaderBlockFragment()
			}
		}
	}
	for _, s := range []struct {
		id       uint32
		settings bool // the client sets the table size again first
		update   bool
	}{{1, false, true}, {3, false, false}, {5, true, true}, {7, false, false}} {
		if s.settings {
			c.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 128})
		}
		b := block(s.id)
		if got := b[0] == tableSizeZero; got != s.update {
			t.Fatalf("stream %d: block %x; want a table size update first: %v", s.id, b, s.update)
		}
		fs := decodeBlock(t, b)
		if fs[0].Name != ":status" || fs[0].Value != "200" {
			t.Fatalf("stream %d: decoded %v", s.id, fs)
		}
	}
}
