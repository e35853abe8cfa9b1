package h1

import (
	"errors"
	"io"
	"net/http"

	"github.com/sluice-lb/sluice/internal/edge"
)

// streamBody is the body of a response that Streams.RoundTrip returned,
// read from the backend connection as the codec asks for it: a fixed length
// straight into the reader's buffer, a chunked body decoded (its trailers
// into resp.Trailer), or a body that ends with the connection. At its end
// the connection goes back to the pool when the response allows (see
// upConn.release), else it is closed; Close before the end closes it. One
// goroutine reads and closes it.
type streamBody struct {
	uc   *upConn // nil once the body ended or was closed
	stop func() bool
	keep bool // the connection may carry another request after this body
	mode int  // outFixed, outChunked or outRaw
	left int64
	ck   edge.Chunked
	tr   []byte // the trailer section so far
	resp *http.Response
	err  error
}

var errBodyClosed = errors.New("h1: read on a closed response body")

func (b *streamBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	switch b.mode {
	case outFixed:
		n, err = b.readFixed(p)
	case outChunked:
		n, err = b.readChunked(p)
	default:
		n, err = b.readRaw(p)
	}
	if err != nil {
		b.err = err
		if err == io.EOF {
			b.finish()
		} else {
			b.abort()
		}
	}
	return n, err
}

// readFixed reads what is buffered, then from the connection, never past
// the declared length.
func (b *streamBody) readFixed(p []byte) (int, error) {
	uc := b.uc
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	var n int
	if uc.r < uc.w {
		n = copy(p, uc.buf[uc.r:uc.w])
		uc.r += n
	} else {
		var err error
		n, err = uc.nc.Read(p)
		if n == 0 && err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	if b.left -= int64(n); b.left == 0 {
		return n, io.EOF
	}
	return n, nil
}

// readChunked decodes chunk data into p from what is buffered, reading
// more from the connection only when nothing was decoded yet; the end of
// the body comes with the last data when it is already buffered.
func (b *streamBody) readChunked(p []byte) (int, error) {
	uc := b.uc
	n := 0
	for {
		for uc.r < uc.w && n < len(p) {
			if left := b.ck.DataLeft(); left > 0 {
				k := copy(p[n:], uc.buf[uc.r:uc.r+int(min(left, int64(uc.w-uc.r)))])
				b.ck.Skip(k)
				uc.r += k
				n += k
				continue
			}
			// Framing bytes one at a time: the trailer section is kept.
			trailer := b.ck.InTrailer()
			_, done, err := b.ck.Feed(uc.buf[uc.r : uc.r+1])
			if err != nil {
				return n, err
			}
			if trailer {
				b.tr = append(b.tr, uc.buf[uc.r])
			}
			uc.r++
			if done {
				b.trailers()
				return n, io.EOF
			}
		}
		if n > 0 {
			return n, nil
		}
		if err := uc.refill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
}

// trailers sets the values of the trailer fields received, announced or
// not, as http.Transport does.
func (b *streamBody) trailers() {
	if len(b.tr) <= 2 {
		return // only the final empty line
	}
	for f := range edge.Fields(b.tr, 0) {
		if b.resp.Trailer == nil {
			b.resp.Trailer = http.Header{}
		}
		b.resp.Trailer.Add(string(f.Name), string(f.Value))
	}
}

// readRaw reads a body that ends when the backend closes the connection.
func (b *streamBody) readRaw(p []byte) (int, error) {
	uc := b.uc
	if uc.r < uc.w {
		n := copy(p, uc.buf[uc.r:uc.w])
		uc.r += n
		return n, nil
	}
	return uc.nc.Read(p)
}

// Buffered reports whether the next Read returns body bytes without
// waiting for the backend: a fixed or until-close body with bytes buffered,
// a chunked one inside chunk data that is buffered.
func (b *streamBody) Buffered() bool {
	uc := b.uc
	if uc == nil || b.err != nil || uc.r == uc.w {
		return false
	}
	return b.mode != outChunked || b.ck.DataLeft() > 0
}

// finish ends the exchange after the body's last byte: the connection goes
// back to the pool, unless the response or the context (which may have
// moved its deadline) forbid it.
func (b *streamBody) finish() {
	uc := b.uc
	if uc == nil {
		return
	}
	b.uc = nil
	if !b.stop() || !b.keep {
		uc.nc.Close()
		return
	}
	uc.release() // closes it instead when bytes are left past the response
}

// abort closes the connection of a body that did not end.
func (b *streamBody) abort() {
	if uc := b.uc; uc != nil {
		b.uc = nil
		b.stop()
		uc.nc.Close()
	}
}

// Close closes the connection when the body was not read to its end.
func (b *streamBody) Close() error {
	if b.err == nil {
		b.err = errBodyClosed
	}
	b.abort()
	return nil
}
