package relay

import (
	"bytes"
	"io"
)

// chunker cuts a body into BDAT chunks (RFC 3030) under the package's
// line-ending rule: a bare LF becomes CRLF, CRLF and a bare CR pass
// unchanged, and a body that does not end with CRLF gets one. Nothing is
// dot-stuffed: BDAT counts bytes, it has no terminator to protect.
type chunker struct {
	src      io.Reader
	in       []byte // read buffer
	pos, end int    // unread bytes are in[pos:end]
	prevCR   bool   // the last byte passed on was a CR
	endsLF   bool   // the last byte passed on was a LF
	eof      bool   // src is exhausted
}

// fill fills dst with the next bytes of the body, as many as fit. done
// reports that they are the last ones (dst may hold none then).
func (k *chunker) fill(dst []byte) (n int, done bool, err error) {
	for n < len(dst) {
		if k.pos == k.end {
			if k.eof {
				return k.finish(dst, n)
			}
			if err := k.read(); err != nil {
				return n, false, err
			}
			continue
		}
		m, fits := k.copyLine(dst[n:])
		n += m
		if !fits {
			break
		}
	}
	return n, false, nil
}

func (k *chunker) read() error {
	m, err := k.src.Read(k.in)
	k.pos, k.end = 0, m
	if err == io.EOF {
		k.eof = true
		return nil
	}
	return err
}

// finish adds the final CRLF when the body did not end with a line break
// (or was empty, as DATA's terminator would).
func (k *chunker) finish(dst []byte, n int) (int, bool, error) {
	if k.endsLF {
		return n, true, nil
	}
	if len(dst)-n < 2 {
		return n, false, nil // in the next chunk
	}
	n += copy(dst[n:], "\r\n")
	k.prevCR, k.endsLF = false, true
	return n, true, nil
}

// copyLine copies unread bytes into room up to and including the first
// LF, which becomes CRLF if it was bare. fits is false when that CRLF did
// not fit.
func (k *chunker) copyLine(room []byte) (n int, fits bool) {
	seg := k.in[k.pos:k.end]
	seg = seg[:min(len(seg), len(room))]
	i := bytes.IndexByte(seg, '\n')
	if i < 0 {
		n = copy(room, seg)
		k.pos += n
		k.passed(seg[n-1])
		return n, true
	}
	n = copy(room, seg[:i])
	k.pos += n
	if n > 0 {
		k.passed(seg[n-1])
	}
	if !k.prevCR {
		if len(room)-n < 2 {
			return n, false
		}
		room[n] = '\r'
		n++
	}
	room[n] = '\n'
	k.pos++
	k.passed('\n')
	return n + 1, true
}

func (k *chunker) passed(b byte) {
	k.prevCR, k.endsLF = b == '\r', b == '\n'
}
