package h1

import (
	"strings"
	"unsafe"

	"github.com/sluice-lb/sluice/internal/edge"
	"github.com/sluice-lb/sluice/internal/proxy"
)

var _ proxy.Fields = (*rawFields)(nil)

// rawFields reads the field lines of a head that edge.ParseRequestHead
// accepted. The strings it returns alias the head (see bstr).
type rawFields struct {
	head  []byte
	first int // position of the first field line
}

func (f *rawFields) Get(name string) string {
	v, _ := f.Value(name, 0)
	return v
}

func (f *rawFields) Value(name string, i int) (string, bool) {
	for fl := range edge.Fields(f.head, f.first) {
		if equalFoldName(fl.Name, name) {
			if i == 0 {
				return bstr(fl.Value), true
			}
			i--
		}
	}
	return "", false
}

// connTokens are the field names the Connection fields of a head list
// (which makes them hop-by-hop, RFC 9110 §7.6.1), collected in one pass so
// that checking every field against them stays linear in the head's size.
// The strings alias the head.
type connTokens struct {
	arr  [16]string
	toks []string
}

// collect gathers the tokens of f's Connection fields.
func (ct *connTokens) collect(f *rawFields) {
	ct.toks = ct.arr[:0]
	for fl := range edge.Fields(f.head, f.first) {
		if !equalFoldName(fl.Name, "connection") {
			continue
		}
		v := bstr(fl.Value)
		for v != "" {
			tok := v
			if j := strings.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				v = ""
			}
			if tok = strings.Trim(tok, " \t"); tok != "" {
				ct.toks = append(ct.toks, tok) // allocates only past 16 tokens
			}
		}
	}
}

// has reports whether name is among the tokens.
func (ct *connTokens) has(name string) bool {
	for _, t := range ct.toks {
		if len(t) == len(name) && strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// equalFoldName compares a field name as sent with a name in any case.
func equalFoldName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

// bstr views b as a string without copying. The engine uses it for values
// that alias its read buffer and are only used while the buffer holds them
// (routing, hashing, affinity lookups), which is what keeps its request path
// free of allocations; nothing that outlives the request keeps such a
// string.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
