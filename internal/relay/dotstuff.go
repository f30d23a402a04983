package relay

import (
	"bufio"
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
	for i, c := range p {
		if c == '\n' {
			// CRLF, or a bare LF sent as CRLF: one line break, held back.
			d.pendingCR = false
			if err := d.flushBreak(); err != nil {
				return i, err
			}
			d.pendingCRLF, d.lineStart = true, true
			continue
		}
		if err := d.flushBreak(); err != nil {
			return i, err
		}
		if d.pendingCR {
			// A bare CR: data, and not a line end.
			if err := d.w.WriteByte('\r'); err != nil {
				return i, err
			}
			d.pendingCR = false
		}
		if c == '\r' {
			d.pendingCR = true
			continue
		}
		if c == '.' && d.lineStart {
			if err := d.w.WriteByte('.'); err != nil {
				return i, err
			}
		}
		if err := d.w.WriteByte(c); err != nil {
			return i, err
		}
		d.lineStart = false
	}
	return len(p), nil
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
		d.pendingCR = false
	}
	return d.w.Flush()
}
