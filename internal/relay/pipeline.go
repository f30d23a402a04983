package relay

import (
	"errors"
	"fmt"
	"net/textproto"
	"strings"
)

// How a Client sends its transactions (Client.Pipelining).
const (
	modeNone       = "none"       // go-smtp, one command at a time
	modePipelining = "pipelining" // RFC 2920, the body after DATA
	modeChunking   = "chunking"   // RFC 2920 and RFC 3030, the body in BDAT chunks
)

const (
	// chunkSize is the most body bytes one BDAT command carries.
	chunkSize = 128 << 10
	// chunkWindow is how many BDAT replies may be owed before the next
	// chunk waits for the oldest: it bounds both the unread replies and
	// the data the server may still refuse.
	chunkWindow = 4
	// rcptWindow is how many replies may be owed while RCPTs are written;
	// past it, half are read before the next RCPT goes out. It bounds the
	// RCPTs sent past a server's limit per transaction, and the replies a
	// server must hold while the client writes.
	rcptWindow = 100
)

// pickMode chooses the transaction mode from the EHLO keywords. CHUNKING
// is only used together with PIPELINING: without it every BDAT would cost
// a round trip.
func pickMode(ext map[string]string, opts Options) string {
	if _, ok := ext["PIPELINING"]; !ok || opts.NoPipelining {
		return modeNone
	}
	if _, ok := ext["CHUNKING"]; ok && !opts.NoChunking {
		return modeChunking
	}
	return modePipelining
}

// step is a reply owed by the server for a command already written.
type step struct {
	op   string // Error.Op for the reply
	want int    // the code expected, in textproto's form (25 = any 25x)
	rcpt int    // index in txn.out, for "rcpt"
}

// pipelined runs the transaction with PIPELINING (RFC 2920 §3.1): RSET
// (when a transaction may be open), MAIL, every RCPT and then DATA, or
// RSET for Verify, in one write; then the replies, in order. CHUNKING
// sends the body in BDAT chunks once the envelope is accepted.
//
// At most rcptWindow replies are owed while RCPTs are written: a long
// recipient list is written in parts as the replies come back, so that
// neither side blocks writing while the other does (RFC 2920 §3.1 asks a
// client not to deadlock), and once a reply says the transaction has too
// many recipients no more RCPT is written. DATA then follows the replies
// instead of the RCPTs.
func (c *Client) pipelined(t *txn) *Error {
	if c.dirty {
		c.command(t, step{op: "rset", want: 250}, "RSET")
	}
	c.command(t, step{op: "mail", want: 250}, c.mailCommand(t))
	for _, i := range t.rcpts {
		if len(t.steps) >= rcptWindow {
			if e := c.drain(t, rcptWindow/2); e != nil {
				return c.lose(t, e)
			}
			if t.mailErr != nil || t.tooMany != nil {
				break
			}
		}
		c.command(t, step{op: "rcpt", want: 25, rcpt: i}, "RCPT TO:<"+t.env.To[i]+">")
		t.written++
	}
	dataSent := false
	switch {
	case t.verify:
		c.command(t, step{op: "rset", want: 250}, "RSET")
	case c.mode == modePipelining && t.written == len(t.rcpts) && t.tooMany == nil && t.mailErr == nil:
		c.command(t, step{op: "data", want: 354}, "DATA")
		dataSent = true
	}
	if e := c.readAll(t); e != nil {
		if t.verify && t.mailErr != nil {
			// A server that refuses MAIL may refuse the closing RSET too
			// (Postfix's 530 before STARTTLS): MAIL's reply, not the
			// RSET's, is what each recipient would get.
			t.carryUnwritten()
			t.refuseMail()
		}
		return c.lose(t, e)
	}
	t.carryUnwritten()
	if t.mailErr != nil {
		// The RCPT replies after a refused MAIL are 503s: MAIL's reply is
		// the cause for every recipient.
		t.refuseMail()
	}
	switch {
	case t.verify:
		return nil
	case c.mode == modePipelining:
		return c.pipelinedData(t, dataSent)
	}
	return c.chunked(t)
}

// mailCommand is MAIL FROM with the parameters go-smtp's Client.Mail
// would add for the same envelope: BODY=8BITMIME whenever advertised,
// SIZE= when advertised and known, SMTPUTF8 when needed (already checked
// to be advertised).
func (c *Client) mailCommand(t *txn) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + t.env.From + ">")
	if _, ok := c.ext["8BITMIME"]; ok {
		b.WriteString(" BODY=8BITMIME")
	}
	if _, ok := c.ext["SIZE"]; ok && t.env.Size != 0 {
		fmt.Fprintf(&b, " SIZE=%d", t.env.Size)
	}
	if t.utf8 {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}

// command buffers one command line and the reply it is owed. Write errors
// surface at the flush before the next read.
func (c *Client) command(t *txn, s step, line string) {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	t.steps = append(t.steps, s)
}

// readAll reads every reply still owed.
func (c *Client) readAll(t *txn) *Error {
	for len(t.steps) > 0 {
		if e := c.readStep(t); e != nil {
			return e
		}
	}
	return nil
}

// readStep flushes what is buffered, reads the oldest reply owed and
// records it. A non-nil error means the connection is lost.
func (c *Client) readStep(t *txn) *Error {
	s := t.steps[0]
	t.steps = t.steps[1:]
	text, refused, lost := c.reply(s)
	if lost != nil {
		return lost
	}
	switch s.op {
	case "rset":
		if refused != nil {
			return refused // as in lockstep: a failed RSET ends the connection
		}
		c.dirty = false
	case "mail":
		t.mailErr = refused
		c.dirty = c.dirty || refused == nil
	case "rcpt":
		switch {
		case t.mailErr != nil:
		case refused != nil:
			t.rcptRefused(s.rcpt, refused)
		default:
			t.rcptAccepted(s.rcpt)
		}
	default: // "data": DATA, the final "." or a BDAT chunk
		if t.dataErr == nil {
			t.dataErr = refused
		}
		t.final = text
	}
	return nil
}

// reply flushes the buffered commands and reads one reply for s. text is
// the reply text when it was the code wanted; refused is any other reply;
// lost is set, with refused, when the connection cannot go on: a network
// failure, a malformed reply or a 421 (RFC 5321 §3.8).
func (c *Client) reply(s step) (text string, refused, lost *Error) {
	if c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			e := c.classify(s.op, err)
			return "", e, e
		}
	}
	_, msg, err := c.tp.ReadResponse(s.want)
	if err == nil {
		return msg, nil, nil
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		err = toSMTPError(te) // as go-smtp does, so that Err is an *smtp.SMTPError
	}
	e := classify(s.op, err)
	gone := connectionLost(e)
	e = c.secrets.scrubError(e)
	if gone {
		return "", e, e
	}
	return "", e, nil
}

// pipelinedData continues after the replies to MAIL, RCPT and, when
// dataSent, DATA. When DATA was held back (the RCPTs were cut short), it
// is sent now if a recipient was accepted.
func (c *Client) pipelinedData(t *txn, dataSent bool) *Error {
	if !dataSent {
		if t.mailErr != nil || len(t.accepted) == 0 {
			return nil // MAIL was accepted or not: c.dirty says whether to RSET
		}
		c.command(t, step{op: "data", want: 354}, "DATA")
		if e := c.readAll(t); e != nil {
			return c.lose(t, e)
		}
	}
	if t.dataErr != nil {
		if t.mailErr == nil {
			t.refuse(t.dataErr)
		}
		return nil
	}
	if t.mailErr != nil || len(t.accepted) == 0 {
		// RFC 2920 §3.1: DATA was answered 354 although no recipient was
		// accepted. Send the terminator alone, never the body; its reply
		// changes nothing (every recipient keeps its refusal).
		c.command(t, step{op: "data", want: 250}, ".")
		if e := c.readAll(t); e != nil {
			return c.lose(t, e)
		}
		return nil
	}
	if e := c.writeBody(t); e != nil {
		return c.lose(t, e)
	}
	// The dot-stuffer held back the body's last line break: this supplies
	// it, and the terminator.
	c.bw.WriteString("\r\n.\r\n")
	t.steps = append(t.steps, step{op: "data", want: 250})
	e := c.readAll(t)
	c.tr.endData()
	if e != nil {
		// Also the duplicate window: the server may have taken it.
		return c.lose(t, e)
	}
	return c.finish(t)
}

// finish records the reply that ends the message: the refusal, or the
// acceptance, for every recipient accepted at RCPT. The transaction is
// over either way.
func (c *Client) finish(t *txn) *Error {
	c.dirty = false
	if t.dataErr != nil {
		t.refuse(t.dataErr)
		return nil
	}
	c.deliver(t, t.final)
	return nil
}

// chunked sends the body in BDAT chunks (RFC 3030) after the replies to
// MAIL and RCPT: no chunk is written before MAIL and one RCPT were
// accepted, since a server that does not discard a refused chunk's data
// (go-smtp's, for one) would read the body as commands. Up to chunkWindow
// chunk replies stay unread while the next chunks go out. The body is
// followed by "BDAT 0 LAST" only once BeforeEnd returned nil.
func (c *Client) chunked(t *txn) *Error {
	if t.mailErr != nil || len(t.accepted) == 0 {
		return nil // MAIL was accepted or not: c.dirty says whether to RSET
	}
	if c.chunk == nil {
		c.chunk = make([]byte, chunkSize)
	}
	src := t.source()
	k := &chunker{src: src, in: c.copyBuf()}
	for done := false; !done; {
		n, end, err := k.fill(c.chunk)
		if err != nil {
			return c.lose(t, c.abandon(src, nil, err))
		}
		done = end
		if n > 0 {
			c.command(t, step{op: "data", want: 250}, fmt.Sprintf("BDAT %d", n))
			c.bw.Write(c.chunk[:n])
		}
		if e := c.drain(t, chunkWindow); e != nil {
			return c.lose(t, e)
		}
		if t.dataErr != nil {
			// RFC 3030 §2: after a refused chunk no more may be sent; the
			// server discards those already in the pipeline.
			return c.chunkRefused(t)
		}
	}
	// Every chunk's reply before the hold and LAST: no BDAT may follow a
	// refused chunk (RFC 3030 §2), and a message already refused takes no
	// place in the caller's reply window. It costs a round trip only when
	// chunk replies are still on their way.
	if e := c.drain(t, 0); e != nil {
		return c.lose(t, e)
	}
	if t.dataErr != nil {
		return c.chunkRefused(t)
	}
	if e := c.beforeEnd(t, src); e != nil {
		return c.lose(t, e)
	}
	c.command(t, step{op: "data", want: 250}, "BDAT 0 LAST")
	if e := c.readAll(t); e != nil {
		return c.lose(t, e) // the duplicate window, as after "."
	}
	return c.finish(t)
}

// drain reads owed replies until at most keep remain.
func (c *Client) drain(t *txn, keep int) *Error {
	for len(t.steps) > keep {
		if e := c.readStep(t); e != nil {
			return e
		}
	}
	return nil
}

// chunkRefused ends a message whose chunk was refused: the replies to the
// chunks already sent are read, the first refusal goes to the accepted
// recipients, and the next transaction starts with RSET.
func (c *Client) chunkRefused(t *txn) *Error {
	if e := c.readAll(t); e != nil {
		return c.lose(t, e)
	}
	t.refuse(t.dataErr)
	c.dirty = true
	return nil
}
