package h2

import "golang.org/x/net/http2/hpack"

// The header blocks sluice sends are encoded here, not by x/net's
// hpack.Encoder. With no dynamic table (newConn), each field is a literal
// without indexing under the static table's name where it has one, and a
// :status of the static table is its index: nothing else needs deciding.
// x/net's encoder looks up every field in its tables through maps, which
// cost about 4 % of a loop's own CPU time on HTTP/2 streams (perf, issue
// 10). The Huffman coding is x/net's, chosen as its encoder chooses it:
// when it is shorter.

// tableSizeZero is a dynamic table size update to 0 (RFC 7541 §6.3). The
// connection's first header block starts with it, and the first after the
// client sets SETTINGS_HEADER_TABLE_SIZE (writeHeadersLocked), as x/net's
// encoder did: a decoder told a size below the default 4096 may require
// an update before any field (nghttp2 does).
const tableSizeZero = 0x20

// appendStatus appends the :status pseudo-header of status: the static
// table's entry where it holds status, else a literal.
func appendStatus(b []byte, status int) []byte {
	for i, code := range staticStatuses {
		if code == status {
			return append(b, 0x80|byte(8+i)) // indexed
		}
	}
	return appendField(b, ":status", statusText(status))
}

// staticStatuses are the static table's :status entries, from index 8.
var staticStatuses = [...]int{200, 204, 206, 304, 400, 404, 500}

// appendField appends name (lower case) and value: the static table's
// index where it holds both (RFC 7541 §6.1), else a literal header field
// without indexing (§6.2.2).
func appendField(b []byte, name, value string) []byte {
	if i := staticName(name); i > 0 {
		switch {
		case value == "" && i != 3 && i != 5 && i != 7 && i != 14 && i != 16,
			i == 16 && value == "gzip, deflate":
			return append(b, 0x80|byte(i)) // the entry's value
		}
		b = appendHpackInt(b, 4, 0, uint64(i))
	} else {
		b = append(b, 0)
		b = appendHpackString(b, name)
	}
	return appendHpackString(b, value)
}

// appendHpackInt appends v with an n-bit prefix (RFC 7541 §5.1), the
// prefix's byte starting with first's high bits.
func appendHpackInt(b []byte, n uint, first byte, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	v -= max
	for v >= 128 {
		b = append(b, byte(v&0x7f|0x80))
		v >>= 7
	}
	return append(b, byte(v))
}

// appendHpackString appends s as a string literal (RFC 7541 §5.2),
// Huffman-coded when that is shorter.
func appendHpackString(b []byte, s string) []byte {
	if h := hpack.HuffmanEncodeLength(s); h < uint64(len(s)) {
		b = appendHpackInt(b, 7, 0x80, h)
		return hpack.AppendHuffmanString(b, s)
	}
	b = appendHpackInt(b, 7, 0, uint64(len(s)))
	return append(b, s...)
}

// staticName is the index of name in HPACK's static table (RFC 7541
// Appendix A; its last entry where several share it, as x/net's encoder
// chooses), or 0.
func staticName(name string) int {
	switch name {
	case ":authority":
		return 1
	case ":method":
		return 3
	case ":path":
		return 5
	case ":scheme":
		return 7
	case ":status":
		return 14
	case "accept-charset":
		return 15
	case "accept-encoding":
		return 16
	case "accept-language":
		return 17
	case "accept-ranges":
		return 18
	case "accept":
		return 19
	case "access-control-allow-origin":
		return 20
	case "age":
		return 21
	case "allow":
		return 22
	case "authorization":
		return 23
	case "cache-control":
		return 24
	case "content-disposition":
		return 25
	case "content-encoding":
		return 26
	case "content-language":
		return 27
	case "content-length":
		return 28
	case "content-location":
		return 29
	case "content-range":
		return 30
	case "content-type":
		return 31
	case "cookie":
		return 32
	case "date":
		return 33
	case "etag":
		return 34
	case "expect":
		return 35
	case "expires":
		return 36
	case "from":
		return 37
	case "host":
		return 38
	case "if-match":
		return 39
	case "if-modified-since":
		return 40
	case "if-none-match":
		return 41
	case "if-range":
		return 42
	case "if-unmodified-since":
		return 43
	case "last-modified":
		return 44
	case "link":
		return 45
	case "location":
		return 46
	case "max-forwards":
		return 47
	case "proxy-authenticate":
		return 48
	case "proxy-authorization":
		return 49
	case "range":
		return 50
	case "referer":
		return 51
	case "refresh":
		return 52
	case "retry-after":
		return 53
	case "server":
		return 54
	case "set-cookie":
		return 55
	case "strict-transport-security":
		return 56
	case "transfer-encoding":
		return 57
	case "user-agent":
		return 58
	case "vary":
		return 59
	case "via":
		return 60
	case "www-authenticate":
		return 61
	}
	return 0
}
