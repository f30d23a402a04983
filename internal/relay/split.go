package relay

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// A server limits the recipients of one transaction (Exchange's receive
// connector MaxRecipientsPerMessage, 200 by default; Postfix's
// smtpd_recipient_limit) and answers the RCPTs past its limit "452 4.5.3
// Too many recipients". RFC 5321 §4.5.3.1.10: the client should then send
// the message to the recipients accepted so far and the rest in a new
// transaction. This file holds that loop's decisions; the paths (lockstep
// in relay.go, pipelined and chunked in pipeline.go) run one transaction
// over txn.rcpts each.

// tooManyRecipients reports whether e, a refused RCPT, says that the
// transaction can take no more recipients rather than anything about the
// recipient:
//
//   - an enhanced code X.5.3, "too many recipients" (RFC 3463 §3.6: it
//     "should normally result in the segmentation of the message"),
//     whatever the basic code: 452 4.5.3 (Exchange, Postfix, Sendmail),
//     451 4.5.3, and 552 or 550 5.5.3 from servers still following
//     RFC 821;
//   - without an enhanced code, 452, the code RFC 5321 §4.5.3.1.10 gives
//     to this condition (older Postfix says "452 Error: too many
//     recipients"), and 451 or 552 whose text says "too many recipients"
//     (552 is RFC 821's code for it, which RFC 5321 §4.5.3.1.10 asks
//     clients to take as temporary).
//
// An enhanced code other than X.5.3 is the server's own statement of the
// cause, so 452 4.2.2 (mailbox full), 452 4.3.1 (insufficient system
// storage) or 450 4.7.1 (a rate limit, which Postfix words "too many
// recipients from ...") concerns the recipient or the client and does not
// split the message. A bare 452 that meant insufficient storage costs at
// most the transactions it takes to see no progress (see another).
func tooManyRecipients(e *Error) bool {
	if e == nil || e.Local || e.Code == 0 {
		return false
	}
	if e.Enhanced != "" {
		return e.Enhanced == "4.5.3" || e.Enhanced == "5.5.3"
	}
	switch e.Code {
	case 452:
		return true
	case 451, 552:
		return strings.Contains(strings.ToLower(e.Message), "too many recipients")
	}
	return false
}

// rcptMax reads RCPTMAX from the parameters of the LIMITS extension
// (RFC 9422 §4.1): the most RCPT commands the server takes in one
// transaction. 0 when absent or malformed.
func rcptMax(limits string) int {
	for _, f := range strings.Fields(limits) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.EqualFold(k, "RCPTMAX") {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	return 0
}

// prepare sets up the first transaction: every recipient that passed the
// local checks is pending, limit is what the server advertised (0 if
// nothing), and a body that can be sought has its starting offset noted.
func (t *txn) prepare(limit int) {
	for i, ok := range t.valid {
		if ok {
			t.pending = append(t.pending, i)
		}
	}
	t.limit = limit
	if s, ok := t.body.(io.Seeker); ok && !t.verify && len(t.pending) > 1 {
		if at, err := s.Seek(0, io.SeekCurrent); err == nil {
			t.seeker, t.seekAt = s, at
		}
	}
}

// begin starts a transaction for the pending recipients, at most limit of
// them when the limit is known.
func (t *txn) begin() {
	t.rounds++
	n := len(t.pending)
	if t.limit > 0 && n > t.limit {
		n = t.limit
	}
	t.rcpts, t.rest = t.pending[:n], t.pending[n:]
	for _, i := range t.rcpts {
		t.out[i].Err = nil // the "too many" of the last transaction
	}
	t.written, t.answered, t.again, t.tooMany = 0, 0, nil, nil
	t.steps, t.mailErr, t.accepted, t.dataErr, t.final = t.steps[:0], nil, nil, nil, ""
}

// source is the body for this transaction's data; from here on a further
// transaction needs the body again.
func (t *txn) source() *bodyReader {
	t.bodyRead = true
	return &bodyReader{r: t.body}
}

func (t *txn) closeBody() {
	if t.reopened != nil {
		_ = t.reopened.Close()
		t.reopened = nil
	}
}

// rcptAccepted records the acceptance of out[i] at RCPT.
func (t *txn) rcptAccepted(i int) {
	t.accepted = append(t.accepted, i)
	t.answered++
}

// rcptRefused records e, a refusal of out[i] at RCPT: final, unless it
// says the transaction is full, when out[i] waits for the next one.
func (t *txn) rcptRefused(i int, e *Error) {
	if !tooManyRecipients(e) {
		t.out[i].Err = e
		t.settled[i] = true
		t.answered++
		return
	}
	if !e.Temporary {
		tmp := *e // RFC 5321 §4.5.3.1.10: 552 here is temporary
		tmp.Temporary = true
		e = &tmp
	}
	if t.tooMany == nil {
		t.tooMany = e
	}
	t.out[i].Err = e
	t.again = append(t.again, i)
}

// carryUnwritten sends the recipients whose RCPT was not written (it stopped
// at a "too many" reply) to the next transaction with that reply.
func (t *txn) carryUnwritten() {
	for _, i := range t.rcpts[t.written:] {
		t.out[i].Err = t.tooMany
		t.again = append(t.again, i)
	}
	t.written = len(t.rcpts)
}

// refuseMail gives MAIL's refusal to every recipient still waiting: those of
// this transaction and those left for later ones. In a later transaction of
// the Send the same MAIL was accepted before, so its refusal is taken as a
// limit of the session (the number of transactions, say, RFC 9422 MAILMAX)
// and made temporary.
func (t *txn) refuseMail() {
	e := t.mailErr
	if t.rounds > 1 && !e.Temporary {
		tmp := *e
		tmp.Temporary = true
		e = &tmp
	}
	for _, list := range [][]int{t.rcpts, t.rest} {
		for _, i := range list {
			t.out[i].Err = e
			t.settled[i] = true
		}
	}
	t.again, t.rest = nil, nil
}

// another decides, after a transaction that kept the connection, whether a
// further one is due, and prepares it. It ends the Send when every
// recipient had a real answer, and, leaving the recipients still waiting
// deferred with the "too many" reply they had, when a further transaction
// cannot help or cannot be made:
//   - no RCPT of the transaction had a real answer (a server that says
//     "too many" to the first RCPT of a fresh transaction would otherwise
//     be asked forever);
//   - the message was refused (DATA, a BDAT chunk or the final reply) for
//     the recipients accepted: sent again it would most likely be refused
//     again, so the others wait for the next attempt;
//   - the body cannot be read again (see Envelope.Reopen).
//
// Each transaction that goes on settles at least one recipient, so a Send
// runs at most one transaction per recipient.
func (c *Client) another(t *txn) bool {
	next := append(t.again, t.rest...)
	slices.Sort(next)
	if len(next) == 0 {
		return false
	}
	// stop ends the Send with next waiting: each keeps the "too many"
	// reply it had, and one left for later by the limit, which never had
	// an RCPT, gets this transaction's (or, without one, a local error
	// saying why). force, when set, is given to all of them instead.
	stop := func(reason string, force *Error) bool {
		e := t.tooMany
		if e == nil {
			e = &Error{Op: "rcpt", Code: 452, Enhanced: "4.5.3", Temporary: true, Local: true,
				Message: fmt.Sprintf("not sent in this attempt: the server takes at most %d recipients per transaction, and %s", t.limit, reason)}
		}
		for _, i := range next {
			switch {
			case force != nil:
				t.out[i].Err = force
			case t.out[i].Err == nil:
				t.out[i].Err = e
			}
			t.settled[i] = true
		}
		c.tr.note("recipients left for a later attempt", slog.Int("recipients", len(next)), slog.String("reason", reason))
		return false
	}
	switch {
	case t.answered == 0:
		return stop("the server answered every RCPT of the transaction \"too many recipients\"", nil)
	case t.dataErr != nil && len(t.accepted) > 0:
		return stop("the message was refused in the transaction before", nil)
	}
	if t.tooMany != nil {
		// The limit the server showed: a next transaction carries no more
		// RCPTs, so that its DATA goes with them in the same write. (A
		// server that counts only accepted recipients takes a few more;
		// those come back "too many" and go on to the next.)
		t.limit = t.answered
	}
	if !t.verify && t.bodyRead {
		if e := c.rewind(t); e != nil {
			return stop("the body cannot be sent again", e)
		}
	}
	c.tr.note("too many recipients for one transaction; a new transaction for the rest",
		slog.Int("transaction", t.rounds+1), slog.Int("recipients_left", len(next)), slog.Int("per_transaction", t.limit))
	t.pending = next
	return true
}

// rewind makes the body readable from its first byte again, for a further
// transaction: env.Reopen, else a seek back. The error, given to the
// recipients left, keeps the "too many" reply's codes.
func (c *Client) rewind(t *txn) *Error {
	var err error
	switch {
	case t.env.Reopen != nil:
		t.closeBody()
		var rc io.ReadCloser
		if rc, err = t.env.Reopen(t.ctx); err == nil && rc == nil {
			err = fmt.Errorf("Envelope.Reopen returned no reader")
		}
		if err == nil {
			t.body, t.reopened, t.bodyRead = rc, rc, false
			return nil
		}
		err = fmt.Errorf("reopening the body failed: %w", err)
	case t.seeker != nil:
		if _, err = t.seeker.Seek(t.seekAt, io.SeekStart); err == nil {
			t.bodyRead = false
			return nil
		}
		err = fmt.Errorf("seeking the body back failed: %w", err)
	default:
		err = fmt.Errorf("the body can be read only once (no Envelope.Reopen, not an io.Seeker)")
	}
	e := &Error{Op: "rcpt", Code: 452, Enhanced: "4.5.3", Temporary: true, Local: true, Err: err,
		Message: "too many recipients for one transaction, and not sent in a new one: " + err.Error()}
	if tm := t.tooMany; tm != nil {
		e.Code, e.Enhanced, e.Message = tm.Code, tm.Enhanced, tm.Message+" (not sent in a new transaction: "+err.Error()+")"
	}
	return e
}
