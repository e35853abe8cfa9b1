package edge

// chunked tracks a chunked body (RFC 9112 §7.1) byte by byte, so that the
// guard knows exactly where the message ends and never needs to buffer it:
//
//	chunk-size [ chunk-ext ] CRLF chunk-data CRLF ... "0" [ chunk-ext ] CRLF
//	trailer-section CRLF
//
// It is stricter than the RFC where the RFC allows what nobody sends and
// parsers disagree on: no whitespace anywhere in a chunk-size line (net/http
// refuses "5 ;ext"), CRLF only (no bare LF), at most maxSizeDigits hex digits,
// chunk-size lines of at most maxChunkLine bytes. Trailer fields follow the
// rules of header fields and must not be framing or Host fields.
type chunked struct {
	state  uint8
	size   int64 // chunk-data bytes left, or the size being read
	digits int   // hex digits of the size
	line   int   // bytes of the current chunk-size line
	bytes  int   // bytes of the trailer section
	fields int   // trailer field lines
	name   [17]byte
	nlen   int   // bytes of the current trailer field name
	data   int64 // chunk-data bytes so far
}

const (
	ckSize     = iota // in the chunk size
	ckExtStart        // after ';': an extension name must follow
	ckExtName
	ckExtValStart // after '='
	ckExtToken
	ckExtQuoted
	ckExtEscape   // after a backslash in a quoted string
	ckExtQuoteEnd // after the closing quote
	ckSizeLF      // after the CR of a chunk-size line
	ckData
	ckDataCR // after chunk data: CR must follow
	ckDataLF
	ckTrailer     // at the start of a trailer line
	ckTrailerName // in a trailer field name
	ckTrailerValue
	ckTrailerLF // after the CR of a trailer line
	ckEndLF     // after the CR of the final empty line
	ckDone
)

func (k *chunked) reset() { *k = chunked{} }

// dataLeft is the number of chunk-data bytes that may follow at once.
func (k *chunked) dataLeft() int64 {
	if k.state == ckData {
		return k.size
	}
	return 0
}

// consumeData accounts for n bytes of chunk data read outside feed.
func (k *chunked) consumeData(n int) {
	k.data += int64(n)
	if k.size -= int64(n); k.size == 0 {
		k.state = ckDataCR
	}
}

// feed consumes a prefix of b. It returns how many bytes belong to the body
// and are valid, and either the end of the body (done) or an error; with
// neither, the whole of b was consumed and more is needed.
func (k *chunked) feed(b []byte, lim *Limits) (n int, done bool, err *Error) {
	for n < len(b) {
		if k.state == ckData {
			m := len(b) - n
			if int64(m) > k.size {
				m = int(k.size)
			}
			n += m
			k.consumeData(m)
			continue
		}
		c := b[n]
		if err := k.step(c, lim); err != nil {
			return n, false, err
		}
		n++
		if k.state == ckDone {
			return n, true, nil
		}
	}
	return n, false, nil
}

// step advances over one byte of the framing (not of chunk data).
func (k *chunked) step(c byte, lim *Limits) *Error {
	if k.state <= ckSizeLF {
		if k.line++; k.line > maxChunkLine {
			return errChunkLine
		}
	}
	if k.state >= ckTrailer {
		if k.bytes++; k.bytes > lim.MaxHeaderBytes {
			return errTrailerTooBig
		}
	}
	switch k.state {
	case ckSize:
		switch {
		case class[c]&cHex != 0:
			if k.digits++; k.digits > maxSizeDigits {
				return errChunkTooLarge
			}
			k.size = k.size<<4 | int64(unhex(c))
		case k.digits == 0:
			return errChunkSize
		case c == ';':
			k.state = ckExtStart
		case c == '\r':
			k.state = ckSizeLF
		case c == '\n':
			return errBareLF
		default:
			return errChunkSize
		}
	case ckExtStart:
		if !isTchar(c) {
			return errChunkExt
		}
		k.state = ckExtName
	case ckExtName, ckExtToken, ckExtQuoteEnd:
		switch {
		case c == ';':
			k.state = ckExtStart
		case c == '\r':
			k.state = ckSizeLF
		case c == '\n':
			return errBareLF
		case c == '=' && k.state == ckExtName:
			k.state = ckExtValStart
		case isTchar(c) && k.state != ckExtQuoteEnd:
		default:
			return errChunkExt
		}
	case ckExtValStart:
		switch {
		case c == '"':
			k.state = ckExtQuoted
		case isTchar(c):
			k.state = ckExtToken
		default:
			return errChunkExt
		}
	case ckExtQuoted:
		switch {
		case c == '"':
			k.state = ckExtQuoteEnd
		case c == '\\':
			k.state = ckExtEscape
		case class[c]&cValue == 0:
			return errChunkExt
		}
	case ckExtEscape:
		if class[c]&cValue == 0 {
			return errChunkExt
		}
		k.state = ckExtQuoted
	case ckSizeLF:
		if c != '\n' {
			return errBareCR
		}
		if k.size == 0 {
			k.state = ckTrailer
		} else {
			k.state = ckData
		}
		k.digits, k.line = 0, 0
	case ckDataCR:
		if c != '\r' {
			return errChunkEnd
		}
		k.state = ckDataLF
	case ckDataLF:
		if c != '\n' {
			return errChunkEnd
		}
		k.state = ckSize
	case ckTrailer:
		switch {
		case c == '\r':
			k.state = ckEndLF
		case c == '\n':
			return errBareLF
		case c == ' ' || c == '\t':
			return errObsFold
		case isTchar(c):
			if k.fields++; k.fields > lim.MaxHeaders {
				return errTrailerTooBig
			}
			k.state = ckTrailerName
			k.name[0], k.nlen = lower(c), 1
		default:
			return errTrailerField
		}
	case ckTrailerName:
		switch {
		case c == ':':
			if k.framingName() {
				return errTrailerFraming
			}
			k.state = ckTrailerValue
		case c == ' ' || c == '\t':
			return errSpaceColon
		case isTchar(c):
			if k.nlen < len(k.name) {
				k.name[k.nlen] = lower(c)
			}
			k.nlen++
		default:
			return errTrailerField
		}
	case ckTrailerValue:
		switch {
		case c == '\r':
			k.state = ckTrailerLF
		case c == '\n':
			return errBareLF
		case class[c]&cValue == 0:
			return errFieldValue
		}
	case ckTrailerLF:
		if c != '\n' {
			return errBareCR
		}
		k.state = ckTrailer
	case ckEndLF:
		if c != '\n' {
			return errBareCR
		}
		k.state = ckDone
	}
	return nil
}

// framingName reports whether the trailer field just named may not be a
// trailer: fields that frame the message or route it (RFC 9110 §6.5.1).
func (k *chunked) framingName() bool {
	if k.nlen > len(k.name) {
		return false
	}
	switch string(k.name[:k.nlen]) {
	case "content-length", "transfer-encoding", "host":
		return true
	}
	return false
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
