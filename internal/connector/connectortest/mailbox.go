package connectortest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/popconnector/popconnector/internal/connector"
)

// Message is one message in a Mailbox.
type Message struct {
	UIDL string
	// Data is what RETR serves, as the client hands it on (dot-unstuffed).
	Data []byte
	// ListSize, when not 0, is the size LIST gives instead of len(Data): a
	// server that lists one size and serves another (Dovecot serving a
	// first line that starts with "." unstuffed lists one octet more).
	ListSize int64
	// Fault, when set, spoils RETR of this message.
	Fault *Fault
}

// clone copies what a caller could change behind the Mailbox's back.
func (msg Message) clone() Message {
	msg.Data = slices.Clone(msg.Data)
	if msg.Fault != nil {
		f := *msg.Fault
		msg.Fault = &f
	}
	return msg
}

// Fault spoils RETR of one message. With Refuse set RETR fails at once;
// otherwise After octets are served and then, with Truncate, the message
// ends cleanly (the client cannot tell it was cut: only the size shows
// it), or else the reader fails with Err and the session is unusable, as
// after a dropped connection.
type Fault struct {
	Refuse   error // RETR answered -ERR; nothing is served
	After    int64 // octets served before the fault
	Truncate bool  // end the message after After octets, without an error
	Err      error // the reader's error; nil = io.ErrUnexpectedEOF
	// Times is how many RETRs of the message the fault spoils; 0 = all.
	Times int
}

// Op names a POP3 step for Mailbox.FailNext.
type Op string

// The steps a Mailbox can be told to fail.
const (
	OpDial Op = "dial" // connect and log in
	OpList Op = "list" // LIST and UIDL
	OpRetr Op = "retr" // RETR, of any message
	OpDele Op = "dele" // DELE: nothing is marked
	OpQuit Op = "quit" // QUIT: no deletion is committed
)

// MailboxStats counts what the sessions of a Mailbox did.
type MailboxStats struct {
	Sessions int            // sessions opened
	Open     int            // sessions neither quit nor closed
	Retrs    map[string]int // RETR commands by UIDL, spoiled ones included
	Deles    int            // messages marked by DELE
	Quits    int            // QUITs answered +OK
	Expunged int            // messages those QUITs removed
}

// Mailbox is an in-memory POP3 maildrop that any number of sessions share.
// Each session sees the messages present when it opened, numbered from 1
// in the order they were added; DELE marks, and only a QUIT answered +OK
// removes the marked messages (RFC 1939 §6). Close, a failed QUIT or a
// broken session removes nothing. Two messages may have the same UIDL. It
// is safe for concurrent use.
type Mailbox struct {
	mu    sync.Mutex // guards the Mailbox and all its sessions
	msgs  []*mbMessage
	fails map[Op]*failure
	stats MailboxStats
}

type mbMessage struct {
	Message
	spoiled int // RETRs spoiled by Fault so far
}

type failure struct {
	left int // calls still to fail; < 0 = all
	err  error
}

// NewMailbox returns a Mailbox holding msgs.
func NewMailbox(msgs ...Message) *Mailbox {
	m := &Mailbox{fails: map[Op]*failure{}, stats: MailboxStats{Retrs: map[string]int{}}}
	m.Add(msgs...)
	return m
}

// Add appends msgs, as a delivery to the maildrop does; sessions already
// open do not see them.
func (m *Mailbox) Add(msgs ...Message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, msg := range msgs {
		m.msgs = append(m.msgs, &mbMessage{Message: msg.clone()})
	}
}

// Remove takes the messages with uidl off the maildrop, as another client
// deleting them would, and reports how many there were.
func (m *Mailbox) Remove(uidl string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.msgs)
	m.msgs = slices.DeleteFunc(m.msgs, func(e *mbMessage) bool { return e.UIDL == uidl })
	return n - len(m.msgs)
}

// Messages returns copies of the messages on the maildrop, in order.
func (m *Mailbox) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Message, len(m.msgs))
	for i, e := range m.msgs {
		out[i] = e.Message.clone()
	}
	return out
}

// UIDLs returns the UIDLs on the maildrop, in order.
func (m *Mailbox) UIDLs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, len(m.msgs))
	for i, e := range m.msgs {
		out[i] = e.UIDL
	}
	return out
}

// Len is the number of messages on the maildrop.
func (m *Mailbox) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.msgs)
}

// FailNext makes the next n calls of op fail with err (nil: a generic
// -ERR); n < 0 fails every later call, n == 0 stops failing.
func (m *Mailbox) FailNext(op Op, n int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n == 0 {
		delete(m.fails, op)
		return
	}
	if err == nil {
		err = fmt.Errorf("connectortest: -ERR scripted %s failure", op)
	}
	m.fails[op] = &failure{left: n, err: err}
}

// Stats returns the counters so far.
func (m *Mailbox) Stats() MailboxStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Retrs = maps.Clone(m.stats.Retrs)
	return s
}

// scripted returns the error op must fail with now, if any. Called with mu
// held.
func (m *Mailbox) scripted(op Op) error {
	f := m.fails[op]
	if f == nil {
		return nil
	}
	if f.left > 0 {
		if f.left--; f.left == 0 {
			delete(m.fails, op)
		}
	}
	return f.err
}

// Dial returns a SourceDialer whose sessions are on m.
func (m *Mailbox) Dial() connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("connectortest: dial: %w", err)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if err := m.scripted(OpDial); err != nil {
			return nil, err
		}
		m.stats.Sessions++
		m.stats.Open++
		return &session{m: m, msgs: slices.Clone(m.msgs), marked: map[int]bool{}}, nil
	}
}

// errSessionEnded is the error of any call after QUIT or Close.
var errSessionEnded = errors.New("connectortest: POP3 session already ended")

// session is one POP3 session: a fixed view of the maildrop and its marks.
type session struct {
	m      *Mailbox
	msgs   []*mbMessage // as when the session opened; index = number-1
	marked map[int]bool
	broken error // set when the connection became unusable
	ended  bool
}

var _ connector.Source = (*session)(nil)

// usable is the check before each command. Called with mu held.
func (s *session) usable(ctx context.Context) error {
	switch {
	case s.ended:
		return errSessionEnded
	case s.broken != nil:
		return fmt.Errorf("connectortest: connection unusable: %w", s.broken)
	}
	if err := ctx.Err(); err != nil {
		s.broken = err
		return fmt.Errorf("connectortest: %w", err)
	}
	return nil
}

// end closes the session. Called with mu held.
func (s *session) end() {
	if !s.ended {
		s.ended = true
		s.m.stats.Open--
	}
}

// message returns message num if this session may read it. Called with mu
// held.
func (s *session) message(num int) (*mbMessage, error) {
	if num < 1 || num > len(s.msgs) {
		return nil, fmt.Errorf("connectortest: -ERR no such message %d", num)
	}
	if s.marked[num] {
		return nil, fmt.Errorf("connectortest: -ERR message %d already deleted", num)
	}
	e := s.msgs[num-1]
	if !slices.Contains(s.m.msgs, e) {
		// Another session's QUIT expunged it meanwhile.
		return nil, fmt.Errorf("connectortest: -ERR message %d is gone", num)
	}
	return e, nil
}

func (s *session) ListAll(ctx context.Context) ([]connector.ServerMessage, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if err := s.m.scripted(OpList); err != nil {
		return nil, err
	}
	var out []connector.ServerMessage
	for i, e := range s.msgs {
		if s.marked[i+1] {
			continue
		}
		size := e.ListSize
		if size == 0 {
			size = int64(len(e.Data))
		}
		out = append(out, connector.ServerMessage{Num: i + 1, Size: size, UID: e.UIDL})
	}
	return out, nil
}

func (s *session) Retr(ctx context.Context, num int) (io.ReadCloser, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	e, err := s.message(num)
	if err != nil {
		return nil, err
	}
	s.m.stats.Retrs[e.UIDL]++
	if err := s.m.scripted(OpRetr); err != nil {
		return nil, err
	}
	r := &retrReader{s: s, ctx: ctx, data: e.Data}
	if f := e.Fault; f != nil && (f.Times == 0 || e.spoiled < f.Times) {
		e.spoiled++
		if f.Refuse != nil {
			return nil, f.Refuse
		}
		// A cut at or past the end still fails: the terminating "." never came.
		r.data = e.Data[:min(max(f.After, 0), int64(len(e.Data)))]
		if !f.Truncate {
			r.fail = f.Err
			if r.fail == nil {
				r.fail = io.ErrUnexpectedEOF
			}
		}
	}
	return r, nil
}

// retrReader serves one message; data is never modified (messages are
// replaced, not edited).
type retrReader struct {
	s    *session
	ctx  context.Context
	data []byte
	off  int
	fail error // after data: the connection broke
}

func (r *retrReader) Read(p []byte) (int, error) {
	r.s.m.mu.Lock()
	defer r.s.m.mu.Unlock()
	if err := r.s.usable(r.ctx); err != nil {
		return 0, err
	}
	if r.off == len(r.data) {
		if r.fail != nil {
			r.s.broken = r.fail
			return 0, fmt.Errorf("connectortest: RETR cut short: %w", r.fail)
		}
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

func (r *retrReader) Close() error { return nil }

func (s *session) Dele(ctx context.Context, nums ...int) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	if err := s.m.scripted(OpDele); err != nil {
		return err
	}
	// Like the client: each number is sent, the first -ERR is returned and
	// the other marks stand.
	var first error
	for _, n := range nums {
		if _, err := s.message(n); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		s.marked[n] = true
		s.m.stats.Deles++
	}
	return first
}

func (s *session) Quit(ctx context.Context) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		s.end()
		return err
	}
	defer s.end()
	if err := s.m.scripted(OpQuit); err != nil {
		return err
	}
	gone := map[*mbMessage]bool{}
	for n := range s.marked {
		gone[s.msgs[n-1]] = true
	}
	before := len(s.m.msgs)
	s.m.msgs = slices.DeleteFunc(s.m.msgs, func(e *mbMessage) bool { return gone[e] })
	s.m.stats.Quits++
	s.m.stats.Expunged += before - len(s.m.msgs)
	return nil
}

// Close drops the session: every mark is rolled back.
func (s *session) Close() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.end()
	return nil
}
