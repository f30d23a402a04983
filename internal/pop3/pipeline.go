package pop3

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
)

// Pipelining reports whether the server advertised PIPELINING (RFC 2449
// §6.6) in its CAPA response (under TLS, the one read after STLS). Without
// it RetrPipelined fetches one message at a time.
func (c *Client) Pipelining() bool { return c.hasCapa("PIPELINING", "") }

// RetrQueue is a sequence of RETR commands whose responses are read in
// order while later commands are already on their way (RFC 2449 §6.6). It
// is made by Client.RetrPipelined and, like the Client, is not safe for
// concurrent use (Client.Close may still abort it from another goroutine).
//
// While the queue owns the connection, every method of the Client that
// would send a command returns ErrQueueActive and sends nothing, so no
// command can interleave with the responses in flight. It gives the
// connection back once Next has handed out the last message and that body
// is finished, once an error has ended the queue, or once Close has
// returned.
type RetrQueue struct {
	c      *Client
	nums   []int
	depth  int
	sent   int         // RETR commands written: nums[:sent]
	next   int         // responses Next has started: nums[:next]
	body   *bodyReader // the body last handed out, until it is finished
	err    error       // what ended the queue early; every later message gets it
	werr   error       // a failed write: commands from nums[sent] on may not have gone out
	owns   bool        // q is c.rq
	closed bool
}

// RetrPipelined retrieves the messages nums in that order. With PIPELINING
// advertised, up to depth RETR commands are on the wire ahead of the
// response being read (depth is capped at 64; below 1 it is 1); without
// it, depth is 1: one command, one response, then the next command. The
// first commands are written now, under ctx; ctx is not retained.
//
// The caller reads the messages with Next, strictly in order, and must
// finish each body (read it to EOF, or Close it) before the next call to
// Next. Each body is what Retr returns: streamed from the connection with
// the same 64 KiB buffer whatever the size or depth, dot-stuffing removed,
// failing with io.ErrUnexpectedEOF if the response is cut short. The
// responses not yet read wait in the kernel's socket buffers and TCP's
// flow control, never in the client's memory; the client writes a command
// only when fewer than depth responses are outstanding, so it never blocks
// writing while the server blocks writing to it.
//
// RetrPipelined itself does not fail: a problem found now (an invalid
// message number, a Client already broken or busy, ctx already done, a
// failed write) ends the queue, and Next returns it for every message.
func (c *Client) RetrPipelined(ctx context.Context, nums []int, depth int) *RetrQueue {
	q := &RetrQueue{c: c, nums: slices.Clone(nums), depth: 1}
	if c.Pipelining() {
		q.depth = min(max(depth, 1), pipelineWindow)
	}
	for _, n := range nums {
		if n < 1 {
			q.err = fmt.Errorf("pop3: RETR %d: invalid message number", n)
			return q
		}
	}
	if err := c.begin(ctx); err != nil {
		q.err = err
		return q
	}
	defer c.end()
	if len(nums) == 0 {
		return q
	}
	c.rq, q.owns = q, true
	q.fill(0)
	return q
}

// Depth is the number of RETR commands the queue keeps on the wire ahead
// of the response being read: 1 without PIPELINING.
func (q *RetrQueue) Depth() int { return q.depth }

// Next returns the next message of the queue: its number and its body,
// which must be finished before Next is called again (else ErrBodyOpen,
// and nothing happens). After the last message it returns io.EOF.
//
// ctx bounds this step: writing the commands that keep the queue full,
// reading the status line, and every read of the body until it is
// finished, each read and write also under Options.Timeout, renewed with
// each one.
//
// A -ERR for the message is a *Error naming it ("RETR 7"), body nil; the
// queue goes on, since the server answers every command in order. Any
// other error (network, timeout, ctx, protocol, a body cut short, Close
// of the Client) ends the queue: that message fails with it, every later
// call to Next returns that message's number with an error wrapping it,
// and the Client is unusable for anything but Close. A failed write of
// later commands fails the first message whose command it may have lost,
// not those before it: their responses, often already received from a
// server that answered and closed, are still read. The one exception is
// a ctx already done while no command is outstanding (always the case
// without PIPELINING): the queue ends the same way but the Client stays
// usable.
func (q *RetrQueue) Next(ctx context.Context) (num int, body io.ReadCloser, err error) {
	switch {
	case q.closed:
		return 0, nil, ErrQueueClosed
	case q.body != nil:
		return 0, nil, ErrBodyOpen
	case q.next == len(q.nums):
		return 0, nil, io.EOF
	}
	num = q.nums[q.next]
	name := "RETR " + strconv.Itoa(num)
	q.next++
	if q.err != nil {
		return num, nil, fmt.Errorf("pop3: %s not read: %w", name, q.err)
	}
	c := q.c
	if err := c.checkBroken(); err != nil {
		q.stop(err)
		return num, nil, err
	}
	if err := c.arm(ctx); err != nil {
		if q.sent >= q.next || q.werr != nil {
			// Responses are on their way that nobody will read.
			err = c.fail(name, context.Cause(ctx))
		}
		q.stop(err)
		return num, nil, err
	}
	q.fill(q.next - 1)
	if q.sent < q.next {
		// This message's command may not have gone out: the stream's
		// position is unknown from here on.
		err := c.fail(name, q.werr)
		c.end()
		q.stop(err)
		return num, nil, err
	}
	ok, line, err := c.readStatus(name)
	if err != nil || !ok {
		c.end()
		if err != nil {
			q.stop(err)
			return num, nil, err
		}
		q.releaseIfDone()
		return num, nil, &Error{Command: name, Response: line, Code: parseCode(line)}
	}
	c.bodyOpen = true
	q.body = &bodyReader{c: c, name: name, dr: newDotReader(c.br), q: q}
	return num, q.body, nil
}

// Close ends the queue and gives the connection back. It sends nothing
// more. An unfinished body is drained under the ctx given to Next, and the
// responses to commands already sent (at most depth-1 messages) are read
// and discarded under ctx, so that the session stays in step for DELE and
// QUIT. It returns nil if the Client is usable; otherwise the error that
// made it unusable. Later calls to Next return ErrQueueClosed.
func (q *RetrQueue) Close(ctx context.Context) error {
	if q.closed {
		return q.c.checkBroken()
	}
	q.closed = true
	if q.body != nil {
		q.body.Close() // finishes through bodyDone
	}
	if !q.owns {
		return q.c.checkBroken()
	}
	c := q.c
	if err := c.arm(ctx); err != nil {
		if q.sent > q.next || q.werr != nil {
			err = c.fail("RETR (closing the queue)", context.Cause(ctx))
		}
		q.stop(err)
		return c.checkBroken()
	}
	err := q.drain()
	if err == nil && q.werr != nil {
		// A command of the failed write may have reached the server.
		err = c.fail("RETR (closing the queue)", q.werr)
	}
	c.end()
	q.stop(err)
	return c.checkBroken()
}

// drain reads and discards the responses to the commands already sent.
func (q *RetrQueue) drain() error {
	c := q.c
	for q.next < q.sent {
		name := "RETR " + strconv.Itoa(q.nums[q.next])
		q.next++
		ok, _, err := c.readStatus(name)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		n, err := io.Copy(io.Discard, newDotReader(c.br))
		if err != nil {
			return c.fail(name, err)
		}
		c.debug("S: message body discarded", slog.String("command", name), slog.Int64("bytes", n))
	}
	return nil
}

// fill writes RETR commands until depth responses are outstanding from
// nums[first] on, first being the response about to be read, and flushes
// them in one write. Every earlier response has been read to its end.
//
// A failed write does not fail the queue at once: the responses to the
// commands of earlier writes may already be here in full (a server that
// answered and then closed), and are still read. The first message whose
// command was not written fails with the write error (see Next).
func (q *RetrQueue) fill(first int) {
	end := min(len(q.nums), first+q.depth)
	if q.werr != nil || q.sent >= end {
		return
	}
	c := q.c
	var err error
	for i := q.sent; i < end && err == nil; i++ {
		name := "RETR " + strconv.Itoa(q.nums[i])
		c.debug("C: " + name)
		_, err = c.bw.WriteString(name + "\r\n")
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		q.werr = err
		return
	}
	q.sent = end
}

// bodyDone is called once by a body of the queue when it is finished: at
// EOF (err nil) or on the error that broke the Client. q may be nil (Retr).
func (q *RetrQueue) bodyDone(err error) {
	if q == nil {
		return
	}
	q.body = nil
	if err != nil {
		q.stop(err)
		return
	}
	q.releaseIfDone()
}

// stop ends the queue early with err and gives the connection back.
func (q *RetrQueue) stop(err error) {
	if q.err == nil {
		q.err = err
	}
	q.release()
}

func (q *RetrQueue) releaseIfDone() {
	if q.next == len(q.nums) {
		q.release()
	}
}

func (q *RetrQueue) release() {
	if q.owns {
		q.owns = false
		q.c.rq = nil
	}
}
