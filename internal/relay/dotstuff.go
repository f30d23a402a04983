package relay

import (
	"bufio"
	"bytes"
	"io"
)

// dotStuffer writes a message body for SMTP DATA (RFC 5321 §4.5.2): a "."
// that begins a line is doubled and a bare LF becomes CRLF (§2.3.8); every
// other byte, a bare CR included, passes unchanged. net/textproto's
// DotWriter, which go-smtp uses, turns CR CR LF into CR CR CR LF (after a
// CR, a second CR resets its state), so a message holding those bytes would
// not arrive as archived; hence this writer.
//
// The line break that ends the body is held back and dropped by Finish:
// go-smtp's DataCommand.Close then writes "\r\n.\r\n", which supplies it. A
// body that does not end in a line break gets one there, as SMTP requires.
type dotStuffer struct {
	w           *bufio.Writer
	lineStart   bool // the next byte begins a line
	pendingCR   bool // a CR not yet written: it may start a CRLF
	pendingCRLF bool // a line break not yet written: it may be the last
}

func newDotStuffer(w io.Writer) *dotStuffer {
	return &dotStuffer{w: bufio.NewWriterSize(w, copyBufferSize), lineStart: true}
}

func (d *dotStuffer) Write(p []byte) (int, error) {
	for i := 0; i < len(p); {
		// Fast path: inside a line with nothing held back, everything up to
		// the next CR or LF passes unchanged in one write.
		if !d.pendingCR && !d.pendingCRLF && !d.lineStart {
			j := lineBreak(p[i:])
			if j < 0 {
				j = len(p) - i
			}
			if j > 0 {
				if _, err := d.w.Write(p[i : i+j]); err != nil {
					return i, err
				}
				i += j
				continue
			}
		}
		if err := d.step(p[i]); err != nil {
			return i, err
		}
		i++
	}
	return len(p), nil
}

// lineBreak is the index of the first CR or LF in b, or -1. Two
// IndexByte scans (vectorised) instead of bytes.IndexAny, which tests a
// byte set one byte at a time: on 1 MB messages that scan was the
// stuffer's largest cost.
func lineBreak(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	if lf < 0 {
		lf = len(b)
	}
	if cr := bytes.IndexByte(b[:lf], '\r'); cr >= 0 {
		return cr
	}
	if lf == len(b) {
		return -1
	}
	return lf
}

// step handles one byte at a line boundary or after a held-back byte.
func (d *dotStuffer) step(c byte) error {
	if c == '\n' {
		// CRLF, or a bare LF sent as CRLF: one line break, held back.
		d.pendingCR = false
		if err := d.flushBreak(); err != nil {
			return err
		}
		d.pendingCRLF, d.lineStart = true, true
		return nil
	}
	if err := d.flushBreak(); err != nil {
		return err
	}
	if d.pendingCR {
		// A bare CR: data, and not a line end.
		if err := d.w.WriteByte('\r'); err != nil {
			return err
		}
		d.pendingCR, d.lineStart = false, false
	}
	if c == '\r' {
		d.pendingCR = true
		return nil
	}
	if c == '.' && d.lineStart {
		if err := d.w.WriteByte('.'); err != nil {
			return err
		}
	}
	if err := d.w.WriteByte(c); err != nil {
		return err
	}
	d.lineStart = false
	return nil
}

// flushBreak writes a held-back line break once more bytes follow it.
func (d *dotStuffer) flushBreak() error {
	if !d.pendingCRLF {
		return nil
	}
	d.pendingCRLF = false
	_, err := d.w.WriteString("\r\n")
	return err
}

// Finish writes what is held back except a final line break, and flushes.
func (d *dotStuffer) Finish() error {
	if d.pendingCR {
		if err := d.w.WriteByte('\r'); err != nil {
			return err
		}
		d.pendingCR, d.lineStart = false, false
	}
	return d.w.Flush()
}
