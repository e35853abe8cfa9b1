package h2

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// metaReader decodes a HEADERS frame and its CONTINUATION frames into a
// MetaHeadersFrame, with the checks and errors of x/net's Framer under
// ReadMetaHeaders (golang.org/x/net v0.62.0, frame.go's readMetaFrame):
// field names and values, pseudo-fields first, known and not repeated,
// the header list size (over it: Truncated, as x/net). It is written here
// because x/net's allocates about nine times per header block (the frame,
// a closure and the variables it captures, the fields' slice grown one
// append at a time): here the emit function is bound once per connection,
// and the frame and its fields' slice are the connection's, reused. The
// frame returned is valid until the next call; the strings in it stay
// valid.
type metaReader struct {
	fr  *http2.Framer
	dec *hpack.Decoder
	max uint32 // SETTINGS_MAX_HEADER_LIST_SIZE

	mh         http2.MetaHeadersFrame
	sawRegular bool
	invalid    error
	// what is left of the header list size budget, for trailer names
	// (the "trailer" field's) and for all else
	headersLeft, trailersLeft uint32
}

var (
	errPseudoAfterRegular = errors.New("pseudo header field after regular")
	errInvalidFieldName   = errors.New("invalid header field name")
	errInvalidFieldValue  = errors.New("invalid header field value")
	errUnknownPseudo      = errors.New("invalid pseudo-header")
	errDuplicatePseudo    = errors.New("duplicate pseudo-header")
	errMixPseudo          = errors.New("mix of request and response pseudo headers")
)

func newMetaReader(fr *http2.Framer, max uint32) *metaReader {
	m := &metaReader{fr: fr, max: max}
	m.dec = hpack.NewDecoder(4096, m.emit)
	m.dec.SetMaxStringLength(int(max))
	return m
}

func (m *metaReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		m.invalid = errInvalidFieldValue
	}
	if strings.HasPrefix(hf.Name, ":") {
		if m.sawRegular {
			m.invalid = errPseudoAfterRegular
		}
	} else {
		m.sawRegular = true
		if !validWireName(hf.Name) {
			m.invalid = errInvalidFieldName
		}
	}
	if m.invalid != nil {
		m.dec.SetEmitEnabled(false)
		return
	}
	left, size := &m.headersLeft, hf.Size()
	if hf.Name == "trailer" {
		// Each name the field lists counts as a field of its own.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		left, size = &m.trailersLeft, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		m.dec.SetEmitEnabled(false)
		m.mh.Truncated = true
		m.headersLeft, m.trailersLeft = 0, 0
		return
	}
	*left -= size
	m.mh.Fields = append(m.mh.Fields, hf)
}

// read decodes hf's header block, reading its CONTINUATION frames.
func (m *metaReader) read(hf *http2.HeadersFrame) (*http2.MetaHeadersFrame, error) {
	fields := m.mh.Fields[:0]
	clear(m.mh.Fields[:cap(m.mh.Fields)]) // no strings of the last block kept
	m.mh = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: fields}
	m.sawRegular, m.invalid = false, nil
	m.headersLeft, m.trailersLeft = m.max, m.max
	m.dec.SetEmitEnabled(true)
	var hc interface {
		HeaderBlockFragment() []byte
		HeadersEnded() bool
	} = hf
	for {
		frag := hc.HeaderBlockFragment()
		// Far over the budget, or more after an invalid field (whose
		// size was not counted): the connection ends, as in x/net.
		if int64(len(frag)) > 2*int64(m.headersLeft+m.trailersLeft) || m.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := m.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if hc.HeadersEnded() {
			break
		}
		f, err := m.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		hc = f.(*http2.ContinuationFrame) // the Framer checks the order
	}
	if err := m.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if m.invalid == nil {
		m.invalid = checkPseudos(m.mh.PseudoFields())
	}
	if m.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: m.invalid}
	}
	return &m.mh, nil
}

// checkPseudos: known pseudo-fields, each at most once, of a request or
// of a response.
func checkPseudos(pf []hpack.HeaderField) error {
	var isRequest, isResponse bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return errUnknownPseudo
		}
		for _, hf2 := range pf[:i] {
			if hf.Name == hf2.Name {
				return errDuplicatePseudo
			}
		}
	}
	if isRequest && isResponse {
		return errMixPseudo
	}
	return nil
}

// validWireName: a token in lower case (RFC 9113 §8.2.1).
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}
