package connectortest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

// Received is one message a Relay took.
type Received struct {
	From string
	To   []string // the recipients it was accepted for
	Data []byte
	// Env is the envelope it came with (BeforeEnd left out).
	Env relay.Envelope
	// ReplyLost says the client never learnt of the acceptance: the
	// connection dropped before the reply (the duplicate window).
	ReplyLost bool
	Queued    string // the queue id of the 250 reply
	Route     string // the route it was sent over ("" through Dialer)
}

// RelayStats counts what the connections of a Relay did.
type RelayStats struct {
	Dials        int // connections opened
	Open         int // connections not yet closed
	MaxOpen      int // the most connections open at once
	Transactions int // Sends that reached MAIL FROM
	Quits        int // QUITs
}

// Reply returns the reply code, enhanced code and text as the error the
// real relay gives for it: temporary unless the code is 5xx. The step
// (Op) is set where the Relay gives it (SetMail, SetRcpt, SetData).
func Reply(code int, enhanced, text string) *relay.Error {
	return &relay.Error{Code: code, Enhanced: enhanced, Message: text, Temporary: code/100 != 5}
}

// Relay is an in-memory SMTP endpoint behind any number of connections.
// Its script is what it answers from now on, until changed: a reply per
// recipient to RCPT, to MAIL, and to the final "." for all recipients;
// how many of the next transactions lose their reply; a SIZE limit. It
// reads the whole body, calls Envelope.BeforeEnd where the real relay
// holds the final ".", and records every message it accepted. A failure
// that drops the connection (a body that cannot be read, BeforeEnd's
// error, a lost reply, a 421) makes that connection unusable, as in
// package relay. It is safe for concurrent use; one connection, like
// relay.Client, takes one Send at a time.
type Relay struct {
	mu      sync.Mutex
	rcpt    map[string]*relay.Error
	mail    *relay.Error
	data    *relay.Error
	lose    int
	maxSize int64
	dialErr *failure
	msgs    []Received
	stats   RelayStats
}

// NewRelay returns a Relay that accepts every message.
func NewRelay() *Relay { return &Relay{rcpt: map[string]*relay.Error{}} }

// SetRcpt sets the reply to RCPT TO:<addr> (compared exactly); nil
// accepts again.
func (r *Relay) SetRcpt(addr string, e *relay.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e == nil {
		delete(r.rcpt, addr)
		return
	}
	r.rcpt[addr] = withOp(e, "rcpt")
}

// SetMail sets the reply to MAIL FROM for every transaction; nil accepts.
func (r *Relay) SetMail(e *relay.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mail = withOp(e, "mail")
}

// SetData sets the reply to the final "." for all recipients; nil
// accepts. The message is not kept.
func (r *Relay) SetData(e *relay.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.data = withOp(e, "data")
}

// LoseReplies makes the next n transactions that reach the final "."
// take the message and then drop the connection before replying.
func (r *Relay) LoseReplies(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lose = n
}

// SetMaxSize advertises SIZE n (0: no limit). As package relay does, a
// larger Envelope.Size is refused by the client before MAIL.
func (r *Relay) SetMaxSize(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxSize = n
}

// FailDials makes the next n dials fail with err (nil: connection
// refused, temporary); n < 0 every one, n == 0 none.
func (r *Relay) FailDials(n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 {
		r.dialErr = nil
		return
	}
	if err == nil {
		err = &relay.Error{Op: "connect", Message: "connection refused (scripted)", Temporary: true}
	}
	r.dialErr = &failure{left: n, err: err}
}

// Messages returns copies of the messages taken, in order.
func (r *Relay) Messages() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Received, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = m
		out[i].To = slices.Clone(m.To)
		out[i].Data = slices.Clone(m.Data)
		out[i].Env.To = slices.Clone(m.Env.To)
	}
	return out
}

// Stats returns the counters so far.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Dialer returns a RelayDialer whose connections reach r.
func (r *Relay) Dialer() connector.RelayDialer {
	return func(ctx context.Context) (connector.Relay, error) { return r.dial(ctx, "") }
}

// RouteDialer returns a RouteDialer by which every route reaches r.
func (r *Relay) RouteDialer() connector.RouteDialer {
	return func(ctx context.Context, rt route.Route) (connector.Relay, error) { return r.dial(ctx, rt.Name) }
}

// Routes returns a RouteDialer that reaches the Relay of each route's
// name (compared without regard to case); a route not named there cannot
// be reached.
func Routes(byName map[string]*Relay) connector.RouteDialer {
	return func(ctx context.Context, rt route.Route) (connector.Relay, error) {
		for name, r := range byName {
			if strings.EqualFold(name, rt.Name) {
				return r.dial(ctx, rt.Name)
			}
		}
		return nil, &relay.Error{Op: "connect", Message: "no server for route " + rt.Name + " (connectortest)", Temporary: true}
	}
}

func (r *Relay) dial(ctx context.Context, routeName string) (connector.Relay, error) {
	if err := ctx.Err(); err != nil {
		return nil, &relay.Error{Op: "connect", Message: "cancelled", Temporary: true, Err: err}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.dialErr; f != nil {
		if f.left > 0 {
			if f.left--; f.left == 0 {
				r.dialErr = nil
			}
		}
		return nil, f.err
	}
	r.stats.Dials++
	r.stats.Open++
	r.stats.MaxOpen = max(r.stats.MaxOpen, r.stats.Open)
	return &relayConn{r: r, route: routeName}, nil
}

// relayConn is one connection to a Relay.
type relayConn struct {
	r     *Relay
	route string

	mu     sync.Mutex // one Send at a time
	broken *relay.Error
	closed bool
}

var _ connector.Relay = (*relayConn)(nil)

// lose marks the connection unusable after e and gives e, made
// temporary, to every recipient without a final outcome, as package
// relay does.
func (c *relayConn) lose(out []relay.Outcome, e *relay.Error) *relay.Error {
	if !e.Temporary {
		t := *e
		t.Temporary = true
		e = &t
	}
	fill(out, e)
	c.broken = e
	return e
}

func fill(out []relay.Outcome, e *relay.Error) []relay.Outcome {
	for i := range out {
		if out[i].Err == nil {
			out[i].Err = e
		}
	}
	return out
}

// Send runs one transaction in the order package relay does: local
// checks, MAIL, RCPT, the body, BeforeEnd, the final ".".
func (c *relayConn) Send(ctx context.Context, env relay.Envelope, body io.Reader) ([]relay.Outcome, error) {
	if !c.mu.TryLock() {
		e := &relay.Error{Op: "mail", Message: "connectortest: Send while another Send is in progress on this connection", Temporary: true, Local: true}
		return fill(outcomes(env), e), e
	}
	defer c.mu.Unlock()
	out := outcomes(env)
	if c.broken != nil {
		e := &relay.Error{Op: c.broken.Op, Message: "connection already unusable: " + c.broken.Error(), Temporary: true, Local: true, Err: c.broken}
		return fill(out, e), e
	}
	if len(env.To) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return out, c.lose(out, &relay.Error{Op: "mail", Message: "cancelled", Temporary: true, Err: err})
	}
	r := c.r
	r.mu.Lock()
	maxSize, mail, data := r.maxSize, r.mail, r.data
	rcpt := make([]*relay.Error, len(env.To))
	for i, a := range env.To {
		rcpt[i] = r.rcpt[a]
	}
	if maxSize == 0 || env.Size <= maxSize {
		r.stats.Transactions++
	}
	r.mu.Unlock()

	if maxSize > 0 && env.Size > maxSize {
		return fill(out, &relay.Error{Op: "mail", Code: 552, Enhanced: "5.3.4",
			Message: fmt.Sprintf("message size %d exceeds the server's limit of %d (RFC 1870); not sent", env.Size, maxSize), Local: true}), nil
	}
	if mail != nil {
		if mail.Code == 421 {
			return out, c.lose(out, mail)
		}
		return fill(out, mail), nil
	}
	var accepted []int
	for i, e := range rcpt {
		if e == nil {
			accepted = append(accepted, i)
			continue
		}
		out[i].Err = e
		if e.Code == 421 {
			return out, c.lose(out, e)
		}
	}
	if len(accepted) == 0 {
		return out, nil
	}

	var buf bytes.Buffer
	if _, err := buf.ReadFrom(body); err != nil {
		return out, c.lose(out, &relay.Error{Op: "data", Message: "reading the message body failed; connection closed without ending DATA",
			Temporary: true, Local: true, Err: err})
	}
	if err := ctx.Err(); err != nil {
		return out, c.lose(out, &relay.Error{Op: "data", Message: "cancelled", Temporary: true, Err: err})
	}
	// The real relay holds the final "." here until BeforeEnd returns.
	if env.BeforeEnd != nil {
		if err := env.BeforeEnd(); err != nil {
			return out, c.lose(out, &relay.Error{Op: "data", Message: "message abandoned before the final \".\"; connection closed: " + err.Error(),
				Temporary: true, Local: true, Err: err})
		}
	}

	msg := Received{From: env.From, Data: buf.Bytes(), Env: env, Route: c.route}
	msg.Env.BeforeEnd = nil
	msg.Env.To = slices.Clone(env.To)
	for _, i := range accepted {
		msg.To = append(msg.To, env.To[i])
	}
	r.mu.Lock()
	lost := data == nil && r.lose > 0
	if data == nil {
		if lost {
			r.lose--
			msg.ReplyLost = true
		}
		msg.Queued = fmt.Sprintf("Q%06d", len(r.msgs)+1)
		r.msgs = append(r.msgs, msg)
	}
	r.mu.Unlock()

	switch {
	case lost:
		return out, c.lose(out, &relay.Error{Op: "data", Message: "connection closed by the server", Temporary: true, Err: io.ErrUnexpectedEOF})
	case data != nil:
		for _, i := range accepted {
			out[i].Err = data
		}
		if data.Code == 421 {
			return out, c.lose(out, data)
		}
		return out, nil
	}
	for _, i := range accepted {
		out[i].Reply = "2.0.0 Ok: queued as " + msg.Queued
	}
	return out, nil
}

func outcomes(env relay.Envelope) []relay.Outcome {
	out := make([]relay.Outcome, len(env.To))
	for i, a := range env.To {
		out[i].Address = a
	}
	return out
}

// Quit ends the connection politely; on an unusable one it only closes.
func (c *relayConn) Quit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.r.mu.Lock()
		c.r.stats.Quits++
		c.r.mu.Unlock()
	}
	c.closeLocked()
	return nil
}

// Close drops the connection; it is safe to call more than once, and
// while a Send is under way (it takes effect after it).
func (c *relayConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
	return nil
}

func (c *relayConn) closeLocked() {
	if c.closed {
		return
	}
	c.closed = true
	if c.broken == nil {
		c.broken = &relay.Error{Op: "quit", Message: "connection closed", Temporary: true, Local: true}
	}
	c.r.mu.Lock()
	c.r.stats.Open--
	c.r.mu.Unlock()
}

// withOp returns a copy of e naming step op, or nil.
func withOp(e *relay.Error, op string) *relay.Error {
	if e == nil {
		return nil
	}
	c := *e
	c.Op = op
	return &c
}
