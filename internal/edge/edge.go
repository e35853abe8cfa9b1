// Package edge is the strict HTTP/1.1 guard beneath the downstream codec: it
// watches the raw bytes of client requests (RFC 9112 framing) and refuses
// hostile or ambiguous ones before net/http, and so any backend, sees them.
//
// The pieces, from the bottom up:
//   - ParseRequestHead: a zero-allocation parser of one request head, shared
//     with sluice's HTTP/1.1 engine (package h1), which also uses
//     ParseResponseHead and Chunked for the upstream side;
//   - a chunked-body tracker that knows exactly where a chunked message ends;
//   - Conn, a net.Conn whose Read hands on only bytes it has validated, and
//     NewListener, which wraps every accepted connection in one.
//
// Line endings follow HAProxy: a bare LF ends a line of the head (RFC 9112
// §2.2 lets a recipient accept it, and curl-style tools and old clients send
// it), but a bare CR anywhere is refused, and lines of the chunked framing
// (chunk sizes, trailers) need CRLF, as in net/http (RFC 9112 erratum 7633).
package edge

import (
	"errors"
	"net/http"
	"strconv"
)

// DESIGN defaults for the zero values of Limits.
const (
	DefaultMaxURIBytes    = 8192
	DefaultMaxHeaderBytes = 65536
	DefaultMaxHeaders     = 100
)

// Fixed bounds that are not configurable.
const (
	// maxLeadBytes bounds the empty lines accepted before a request line
	// (RFC 9112 §2.2: old clients send a CRLF after a POST body).
	maxLeadBytes = 64
	// maxChunkLine bounds a chunk-size line with its extensions and CRLF;
	// net/http refuses lines of 4096 bytes and more without the CRLF.
	maxChunkLine = 4096
	// maxSizeDigits bounds the hex digits of a chunk size (leading zeros
	// included), so that a size always fits an int64; net/http takes 16.
	maxSizeDigits = 15
)

// Limits bounds what a request head may hold. Zero or negative values take
// the DESIGN defaults.
type Limits struct {
	// MaxURIBytes bounds the request target (414 beyond); zero means 8192.
	MaxURIBytes int
	// MaxHeaderBytes bounds the head from the first byte of the request line
	// to the end of its terminating empty line, and likewise a trailer
	// section (431 beyond); zero means 65536.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of field lines of a head or of a trailer
	// section (431 beyond); zero means 100.
	MaxHeaders int
}

func (l Limits) resolved() Limits {
	if l.MaxURIBytes <= 0 {
		l.MaxURIBytes = DefaultMaxURIBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// ErrMalformed matches (errors.Is) every *Error: a request the guard refused.
// Conn.Read returns it, wrapped in an *Error, when the violation comes after
// part of the request was already handed on (a bad chunk deep in a body).
var ErrMalformed = errors.New("request refused by the edge guard")

// Error is a refused request: the status to answer with and a short reason
// that is safe to show the client.
type Error struct {
	Status int
	Reason string
}

// StatusCode is the status the refused request gets.
func (e *Error) StatusCode() int { return e.Status }

func (e *Error) Error() string {
	return "edge: " + e.Reason + " (" + strconv.Itoa(e.Status) + ")"
}

// Is makes every *Error match ErrMalformed.
func (e *Error) Is(target error) bool { return target == ErrMalformed }

func bad(reason string) *Error { return &Error{Status: http.StatusBadRequest, Reason: reason} }

// The refusals, allocated once so that refusing costs no allocation either.
var (
	errNUL            = bad("NUL byte in request")
	errBareCR         = bad("CR not followed by LF")
	errBareLF         = bad("bare LF in chunked framing")
	errLead           = bad("too many empty lines before the request line")
	errMethod         = bad("invalid method")
	errRequestLine    = bad("malformed request line")
	errTarget         = bad("invalid request target")
	errVersion        = bad("malformed HTTP version")
	errH2             = bad("HTTP/2 request on an HTTP/1 connection")
	errPRI            = bad("PRI method (HTTP/2 preface) not accepted here")
	errAsterisk       = bad("asterisk-form target is only for OPTIONS")
	errUserinfo       = bad("userinfo in request target")
	errEscape         = bad("invalid percent-encoding in request path")
	errTrailerDecl    = bad("invalid field name in Trailer")
	errAuthority      = bad("request target authority differs from Host")
	errObsFold        = bad("obsolete line folding")
	errFieldName      = bad("invalid header field name")
	errSpaceColon     = bad("whitespace between header field name and colon")
	errFieldValue     = bad("invalid character in header field value")
	errNoHost         = bad("missing Host header")
	errTwoHosts       = bad("more than one Host header")
	errHost           = bad("invalid Host header")
	errCLandTE        = bad("both Content-Length and Transfer-Encoding")
	errTwoCL          = bad("more than one Content-Length")
	errCL             = bad("invalid Content-Length")
	errTwoTE          = bad("more than one Transfer-Encoding")
	errTE             = bad("Transfer-Encoding other than chunked")
	errTE10           = bad("Transfer-Encoding in an HTTP/1.0 request")
	errChunkSize      = bad("invalid chunk size")
	errChunkTooLarge  = bad("chunk size too large")
	errChunkExt       = bad("invalid chunk extension")
	errChunkLine      = bad("chunk-size line too long")
	errChunkEnd       = bad("missing CRLF after chunk data")
	errTrailerField   = bad("invalid trailer field")
	errTrailerFraming = bad("framing or Host field in trailers")

	errURITooLong     = &Error{Status: http.StatusRequestURITooLong, Reason: "request target too long"}
	errHeadTooLarge   = &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "request header too large"}
	errHeaderTimeout  = &Error{Status: http.StatusRequestTimeout, Reason: "request header not received in time"}
	errTooManyFields  = &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "too many header fields"}
	errTrailerTooBig  = &Error{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "trailer section too large"}
	errMethodRefused  = &Error{Status: http.StatusMethodNotAllowed, Reason: "method not allowed"}
	errVersionRefused = &Error{Status: http.StatusHTTPVersionNotSupported, Reason: "HTTP version not supported"}
)
