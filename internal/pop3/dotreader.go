package pop3

import (
	"bufio"
	"bytes"
	"io"
)

// dotReader decodes the body of a multi-line response (RFC 1939 §3):
// lines are CRLF-terminated, a line starting with "." has that dot removed
// ("byte-stuffing"), and the line ".\r\n" ends the response.
//
// Only CRLF ends a line. A bare LF or bare CR inside the data is passed
// through unchanged and does not start a new line, so a "." after a bare
// LF is data, not a terminator (a conforming server stuffs only dots that
// follow CRLF). The CRLF of the last message line, which precedes the
// terminator, is part of the message. Every other byte is copied exactly.
//
// The reader works on whatever bytes bufio.Reader has buffered, so memory
// is the bufio buffer whatever the line length, and a CRLF or ".\r\n" split
// across network reads is handled by the state carried between calls. It
// never consumes a byte after the terminator: the next response stays in
// the bufio.Reader.
type dotReader struct {
	r     *bufio.Reader
	state dotState
	err   error // sticky; io.EOF after the terminator
}

type dotState uint8

const (
	stBOL   dotState = iota // at the start of a line
	stMid                   // inside a line, previous byte not CR
	stCR                    // inside a line, previous byte CR
	stDot                   // consumed "." at the start of a line
	stDotCR                 // consumed ".\r" at the start of a line
)

func newDotReader(r *bufio.Reader) *dotReader {
	return &dotReader{r: r, state: stBOL}
}

// Read implements io.Reader. It returns io.EOF after the terminator and an
// error wrapping io.ErrUnexpectedEOF if the stream ends before it.
func (d *dotReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n := 0
	for n < len(p) {
		if d.r.Buffered() == 0 {
			if n > 0 {
				// Hand over what we have rather than block for more.
				return n, nil
			}
			if _, err := d.r.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				d.err = err
				return n, err
			}
		}
		buf, _ := d.r.Peek(d.r.Buffered())
		consumed, written, done := d.decode(buf, p[n:])
		d.r.Discard(consumed) // cannot fail: consumed <= Buffered()
		n += written
		if done {
			d.err = io.EOF
			return n, io.EOF
		}
	}
	return n, nil
}

// decode runs the state machine over in, writing data to out. It stops when
// in is used up, out is full, or the terminator has been consumed (done).
func (d *dotReader) decode(in, out []byte) (consumed, written int, done bool) {
	i, w := 0, 0
	for i < len(in) && w < len(out) {
		switch d.state {
		case stMid:
			// Fast path: copy up to and including the next CR.
			chunk := in[i:]
			if room := len(out) - w; len(chunk) > room {
				chunk = chunk[:room]
			}
			k := bytes.IndexByte(chunk, '\r')
			if k < 0 {
				w += copy(out[w:], chunk)
				i += len(chunk)
				continue
			}
			w += copy(out[w:], chunk[:k+1])
			i += k + 1
			d.state = stCR
		case stCR:
			c := in[i]
			out[w] = c
			w++
			i++
			switch c {
			case '\n':
				d.state = stBOL
			case '\r':
				// stay: "\r\r\n" ends the line at the second CR
			default:
				d.state = stMid
			}
		case stBOL:
			if in[i] == '.' {
				i++
				d.state = stDot
				continue
			}
			d.state = stMid // reprocess this byte as line data
		case stDot:
			if in[i] == '\r' {
				i++
				d.state = stDotCR
				continue
			}
			// RFC 1939 §3: a leading "." not followed by CRLF is removed.
			d.state = stMid // reprocess this byte as line data
		case stDotCR:
			if in[i] == '\n' {
				return i + 1, w, true
			}
			// ".\r" + other byte: the dot was stuffing; the CR is data.
			out[w] = '\r'
			w++
			d.state = stCR // reprocess this byte after the CR
		}
	}
	return i, w, false
}
