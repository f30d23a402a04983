package relay_test

// A server that limits the recipients per transaction ("452 4.5.3 Too many
// recipients"): the scripted server with a per-transaction budget, on
// every path.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// capRules make a scripted server refuse, with reply, each RCPT past max
// accepted recipients in a transaction (Postfix and Exchange count the
// accepted ones; with commands, every RCPT counts). session, when
// positive, is a budget for the whole connection: a server that stops
// taking recipients at all; none takes none.
type capRules struct {
	max, session int
	commands     bool
	none         bool
	reply        *smtp.SMTPError
	refuse       map[string]error  // per-recipient replies, counted as refused
	onMail       func(n int) error // n counts the MAIL commands from 1
	onData       func(n int, to []string) error
}

// capServer runs capRules and counts transactions.
type capServer struct {
	capRules

	mu        sync.Mutex
	mails     int
	inTxn     int   // counted in the transaction in progress
	taken     int   // accepted in the session
	rcptCalls []int // RCPT commands per transaction
}

var tooMany = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}

func startCap(t *testing.T, rules capRules) (*capServer, *testenv.ScriptedSMTP) {
	s := &capServer{capRules: rules}
	return s, s.start(t)
}

func (s *capServer) start(t *testing.T) *testenv.ScriptedSMTP {
	if s.reply == nil {
		s.reply = tooMany
	}
	return testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnMail: func(string) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.mails++
			s.inTxn = 0
			s.rcptCalls = append(s.rcptCalls, 0)
			if s.onMail != nil {
				return s.onMail(s.mails)
			}
			return nil
		},
		OnRcpt: func(to string) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.rcptCalls[len(s.rcptCalls)-1]++
			if s.none || (s.max > 0 && s.inTxn >= s.max) || (s.session > 0 && s.taken >= s.session) {
				return s.reply
			}
			if err := s.refuse[to]; err != nil {
				if s.commands {
					s.inTxn++
				}
				return err
			}
			s.inTxn++
			s.taken++
			return nil
		},
		OnData: func(_ string, to []string, _ []byte) error {
			s.mu.Lock()
			n := s.mails
			s.mu.Unlock()
			if s.onData != nil {
				return s.onData(n, to)
			}
			return nil
		},
	})
}

func (s *capServer) counts() (mails int, rcptCalls []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails, append([]int(nil), s.rcptCalls...)
}

// capOnEveryPath runs f for each path with a client of a fresh server
// under rules.
func capOnEveryPath(t *testing.T, rules capRules, f func(t *testing.T, s *capServer, srv *testenv.ScriptedSMTP, c *relay.Client)) {
	for _, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			s, srv := startCap(t, rules)
			f(t, s, srv, mustDial(t, srv.Addr, p.mutate))
		})
	}
}

// atTransaction is an onData that answers e to the end of data of the
// n-th transaction.
func atTransaction(n int, e error) func(int, []string) error {
	return func(k int, _ []string) error {
		if k == n {
			return e
		}
		return nil
	}
}

func addrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("r%02d@example.net", i)
	}
	return out
}

// onlyReader hides every method but Read: a body that cannot be sought.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// checkSplit asserts the outcomes by kind, one letter per recipient: "a"
// accepted, "d" deferred (temporary), "r" refused (permanent).
func checkSplit(t *testing.T, out []relay.Outcome, want string) {
	t.Helper()
	if len(out) != len(want) {
		t.Fatalf("%d outcomes, want %d", len(out), len(want))
	}
	var got strings.Builder
	for _, o := range out {
		switch {
		case o.Err == nil:
			got.WriteByte('a')
		case o.Err.Temporary:
			got.WriteByte('d')
		default:
			got.WriteByte('r')
		}
	}
	if got.String() != want {
		for _, o := range out {
			t.Logf("%s: %v %q", o.Address, o.Err, o.Reply)
		}
		t.Fatalf("outcomes %s, want %s", got.String(), want)
	}
}

// groups is how the server received the messages: the recipients of each.
func groups(srv *testenv.ScriptedSMTP) []string {
	var g []string
	for _, m := range srv.Messages() {
		g = append(g, strings.Join(m.To, ","))
	}
	return g
}

func joinAddrs(to []string, from, upTo int) string { return strings.Join(to[from:upTo], ",") }

func TestSplitTooManyRecipientsOnEveryPath(t *testing.T) {
	to := addrs(10)
	bare := &smtp.SMTPError{Code: 452, EnhancedCode: smtp.NoEnhancedCode, Message: "Error: too many recipients"}
	legacy := &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 5, 3}, Message: "Too many recipients"}
	tempFail := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients, send the rest later"}
	unknown := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	rateLimit := &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Error: too many recipients from [127.0.0.1]"}
	cases := []struct {
		name   string
		srv    capRules
		want   string   // checkSplit's letters
		mails  int      // MAIL commands the server saw
		groups []string // recipients of each message received
	}{
		{name: "452 4.5.3, limit 3", srv: capRules{max: 3}, want: "aaaaaaaaaa", mails: 4,
			groups: []string{joinAddrs(to, 0, 3), joinAddrs(to, 3, 6), joinAddrs(to, 6, 9), joinAddrs(to, 9, 10)}},
		{name: "452 without enhanced code", srv: capRules{max: 4, reply: bare}, want: "aaaaaaaaaa", mails: 3,
			groups: []string{joinAddrs(to, 0, 4), joinAddrs(to, 4, 8), joinAddrs(to, 8, 10)}},
		{name: "552 5.5.3 (RFC 821)", srv: capRules{max: 5, reply: legacy}, want: "aaaaaaaaaa", mails: 2,
			groups: []string{joinAddrs(to, 0, 5), joinAddrs(to, 5, 10)}},
		{name: "451 4.5.3", srv: capRules{max: 6, reply: tempFail}, want: "aaaaaaaaaa", mails: 2},
		{name: "limit 1", srv: capRules{max: 1}, want: "aaaaaaaaaa", mails: 10},
		{name: "under the limit: one transaction", srv: capRules{max: 10}, want: "aaaaaaaaaa", mails: 1},
		{name: "refusals count as answers", want: "araaaraaaa", mails: 3,
			srv: capRules{max: 3, refuse: map[string]error{to[1]: unknown, to[5]: unknown}}},
		{name: "452 4.2.2 mailbox full does not split", want: "adaaaaaaaa", mails: 1,
			srv: capRules{refuse: map[string]error{to[1]: &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}}}},
		{name: "452 4.3.1 insufficient storage does not split", want: "aaaaaaaaad", mails: 1,
			srv: capRules{refuse: map[string]error{to[9]: &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage"}}}},
		{name: "450 4.7.1 rate limit does not split", want: "aaadddaaaa", mails: 1,
			srv: capRules{refuse: map[string]error{to[3]: rateLimit, to[4]: rateLimit, to[5]: rateLimit}}},
		{name: "no progress: 452 to the first RCPT of a new transaction", srv: capRules{session: 4}, want: "aaaadddddd", mails: 2,
			groups: []string{joinAddrs(to, 0, 4)}},
		{name: "no progress from the start", srv: capRules{none: true}, want: "dddddddddd", mails: 1},
		{name: "message refused in transaction 2: the rest wait", want: "aaarrrdddd", mails: 2,
			srv: capRules{max: 3, onData: atTransaction(2, &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam"})}},
		{name: "MAIL refused in transaction 2: taken as temporary", want: "aaaddddddd", mails: 2,
			srv: capRules{max: 3, onMail: func(n int) error {
				if n == 2 {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Too many messages in this session"}
				}
				return nil
			}}},
		{name: "transaction 2 deferred at the end of data", want: "aaaddddddd", mails: 2,
			srv: capRules{max: 3, onData: atTransaction(2, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try later"})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			capOnEveryPath(t, tc.srv, func(t *testing.T, s *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
				body := crlf("Subject: split\n\nthe same bytes every time\n")
				hooks := 0
				env := relay.Envelope{From: "a@example.org", To: to, Size: int64(len(body)),
					BeforeEnd: func() error { hooks++; return nil }}
				out, err := c.Send(testContext(t), env, strings.NewReader(body))
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				checkSplit(t, out, tc.want)
				if mails, _ := s.counts(); mails != tc.mails {
					t.Errorf("server saw %d transactions, want %d", mails, tc.mails)
				}
				if msgs := srv.Messages(); len(msgs) > 0 {
					if hooks != 1 {
						t.Errorf("BeforeEnd called %d times, want once", hooks)
					}
					for i, m := range msgs {
						if string(m.Data) != body {
							t.Errorf("message %d: %q, want %q", i, m.Data, body)
						}
					}
				}
				if tc.groups != nil && strings.Join(groups(srv), " | ") != strings.Join(tc.groups, " | ") {
					t.Errorf("messages went to\n  %s\nwant\n  %s", strings.Join(groups(srv), " | "), strings.Join(tc.groups, " | "))
				}
				for _, o := range out {
					if o.Err != nil && o.Err.Op == "rcpt" && strings.HasSuffix(o.Err.Enhanced, ".5.3") && !o.Err.Temporary {
						t.Errorf("%s: too many recipients reported permanent: %v", o.Address, o.Err)
					}
				}
				// The connection goes on.
				if _, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to[:1]}, strings.NewReader(body)); err != nil {
					t.Errorf("next Send on the connection: %v", err)
				}
				if n := srv.Sessions(); n != 1 {
					t.Errorf("%d connections, want 1", n)
				}
			})
		})
	}
}

func TestSplitOutcomesCarryTheirTransactionsReply(t *testing.T) {
	to := addrs(7)
	busy := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Queue busy"}
	capOnEveryPath(t, capRules{max: 3, onData: atTransaction(2, busy)}, func(t *testing.T, _ *capServer, _ *testenv.ScriptedSMTP, c *relay.Client) {
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("x\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		checkSplit(t, out, "aaadddd")
		for _, o := range out[:3] {
			if o.Reply == "" {
				t.Errorf("%s: accepted without the reply text", o.Address)
			}
		}
		for _, o := range out[3:6] {
			if o.Err.Op != "data" || o.Err.Code != 451 || !strings.Contains(o.Err.Message, "Queue busy") {
				t.Errorf("%s: %v, want transaction 2's 451 at data", o.Address, o.Err)
			}
		}
		if e := out[6].Err; e.Op != "rcpt" || e.Code != 452 || e.Enhanced != "4.5.3" {
			t.Errorf("%s: %v, want its 452 4.5.3", out[6].Address, e)
		}
	})
}

func TestSplitConnectionLostLeavesTheRestDeferred(t *testing.T) {
	to := addrs(8)
	shutdown := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Service shutting down"}
	cases := []struct {
		name string
		srv  capRules
		want string
	}{
		{"hang-up after the final dot of transaction 2", capRules{max: 3, onData: atTransaction(2, testenv.ErrDropConnection)}, "aaaddddd"},
		{"421 at RCPT of transaction 2", capRules{max: 3, refuse: map[string]error{to[4]: shutdown}}, "aaaddddd"},
		{"hang-up at RCPT of transaction 3", capRules{max: 3, refuse: map[string]error{to[7]: testenv.ErrDropConnection}}, "aaaaaadd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			capOnEveryPath(t, tc.srv, func(t *testing.T, _ *capServer, _ *testenv.ScriptedSMTP, c *relay.Client) {
				hooks := 0
				out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to,
					BeforeEnd: func() error { hooks++; return nil }}, strings.NewReader("x\r\n"))
				if err == nil {
					t.Fatal("Send returned no error after the connection was lost")
				}
				checkSplit(t, out, tc.want)
				if hooks != 1 {
					t.Errorf("BeforeEnd called %d times, want once", hooks)
				}
				if _, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to[:1]}, strings.NewReader("x\r\n")); err == nil {
					t.Error("the lost connection was used again")
				}
			})
		})
	}
}

// reopener counts the opens of a body and the closes of what it returned.
type reopener struct {
	body          string
	fail          error
	opens, closes int
}

type countingCloser struct {
	io.Reader
	closes *int
}

func (c countingCloser) Close() error { *c.closes++; return nil }

func (r *reopener) open(ctx context.Context) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.opens++
	if r.fail != nil {
		return nil, r.fail
	}
	return countingCloser{Reader: onlyReader{strings.NewReader(r.body)}, closes: &r.closes}, nil
}

// sameBody asserts that the server received n messages, each body.
func sameBody(t *testing.T, srv *testenv.ScriptedSMTP, n int, body string) {
	t.Helper()
	msgs := srv.Messages()
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if !bytes.Equal(m.Data, []byte(body)) {
			t.Errorf("message %d differs (%d bytes, want %d): %.60q", i, len(m.Data), len(body), m.Data)
		}
	}
}

func TestSplitBodySources(t *testing.T) {
	to := addrs(7)
	body := crlf("Subject: sources\n\n" + strings.Repeat("a line of the body\n", 20000)) // 400 KB: several BDAT chunks
	env := relay.Envelope{From: "a@example.org", To: to, Size: int64(len(body))}
	reopening := func(r *reopener) relay.Envelope {
		e := env
		e.Reopen = r.open
		return e
	}
	t.Run("Reopen", func(t *testing.T) {
		capOnEveryPath(t, capRules{max: 3}, func(t *testing.T, _ *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
			r := &reopener{body: body}
			out, err := c.Send(testContext(t), reopening(r), onlyReader{strings.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, out, "aaaaaaa")
			if r.opens != 2 || r.closes != 2 {
				t.Errorf("Reopen: %d opens, %d closes, want 2 and 2", r.opens, r.closes)
			}
			sameBody(t, srv, 3, body)
		})
	})
	t.Run("Reopen fails", func(t *testing.T) {
		capOnEveryPath(t, capRules{max: 3}, func(t *testing.T, s *capServer, _ *testenv.ScriptedSMTP, c *relay.Client) {
			r := &reopener{body: body, fail: errors.New("archive unreachable")}
			out, err := c.Send(testContext(t), reopening(r), onlyReader{strings.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, out, "aaadddd")
			for _, o := range out[3:] {
				if !o.Err.Local || o.Err.Code != 452 || o.Err.Enhanced != "4.5.3" || !strings.Contains(o.Err.Message, "archive unreachable") {
					t.Errorf("%s: %v, want a local temporary 452 4.5.3 naming the cause", o.Address, o.Err)
				}
			}
			if mails, _ := s.counts(); mails != 1 {
				t.Errorf("%d transactions, want 1", mails)
			}
			out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to[:1]}, strings.NewReader("x\r\n"))
			if err != nil {
				t.Fatalf("the connection should go on: %v", err)
			}
			accepted(t, out, 1)
		})
	})
	t.Run("read once", func(t *testing.T) {
		capOnEveryPath(t, capRules{max: 3}, func(t *testing.T, _ *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
			out, err := c.Send(testContext(t), env, onlyReader{strings.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, out, "aaadddd")
			if e := out[3].Err; !strings.Contains(e.Message, "read only once") || e.Code != 452 {
				t.Errorf("%v, want the reason the rest was not sent", e)
			}
			sameBody(t, srv, 1, body)
		})
	})
	t.Run("seeker from where it was", func(t *testing.T) {
		capOnEveryPath(t, capRules{max: 3}, func(t *testing.T, _ *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
			const junk = "junk before the message\n"
			r := strings.NewReader(junk + body)
			io.CopyN(io.Discard, r, int64(len(junk)))
			out, err := c.Send(testContext(t), env, r)
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, out, "aaaaaaa")
			sameBody(t, srv, 3, body)
		})
	})
	t.Run("body unread when transaction 1 had no acceptance", func(t *testing.T) {
		// This server counts refused RCPTs against its limit of 2:
		// transaction 1 accepts nobody and reads no body, so transaction
		// 2 can send it; transaction 3 cannot.
		unknown := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		rules := capRules{max: 2, commands: true, refuse: map[string]error{to[0]: unknown, to[1]: unknown}}
		capOnEveryPath(t, rules, func(t *testing.T, _ *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
			out, err := c.Send(testContext(t), env, onlyReader{strings.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, out, "rraaddd")
			sameBody(t, srv, 1, body)
			if g := groups(srv); g[0] != joinAddrs(to, 2, 4) {
				t.Errorf("the message went to %q, want %s", g, joinAddrs(to, 2, 4))
			}
		})
	})
}

func TestSplitLongListWrittenInWindows(t *testing.T) {
	// 1,000 recipients, 200 per transaction (Exchange's default): the
	// first transaction learns the limit after at most the window's
	// worth of RCPTs past it, the others carry exactly the limit.
	to := make([]string, 1000)
	for i := range to {
		to[i] = fmt.Sprintf("r%04d@example.net", i)
	}
	capOnEveryPath(t, capRules{max: 200}, func(t *testing.T, s *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("x\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		accepted(t, out, len(to))
		mails, calls := s.counts()
		if mails != 5 || len(srv.Messages()) != 5 {
			t.Fatalf("%d transactions, %d messages, want 5 and 5 (RCPTs %v)", mails, len(srv.Messages()), calls)
		}
		if calls[0] < 201 || calls[0] > 300 {
			t.Errorf("transaction 1 carried %d RCPTs, want 201 to 300 (the limit and one window at most)", calls[0])
		}
		for i, n := range calls[1:] {
			if n != 200 {
				t.Errorf("transaction %d carried %d RCPTs, want 200", i+2, n)
			}
		}
	})
}

func TestSplitVerify(t *testing.T) {
	to := addrs(7)
	capOnEveryPath(t, capRules{max: 3}, func(t *testing.T, s *capServer, srv *testenv.ScriptedSMTP, c *relay.Client) {
		out, err := c.Verify(testContext(t), "a@example.org", to)
		if err != nil {
			t.Fatal(err)
		}
		accepted(t, out, len(to))
		if mails, _ := s.counts(); mails != 3 || len(srv.Messages()) != 0 {
			t.Errorf("%d transactions and %d messages, want 3 and none", mails, len(srv.Messages()))
		}
	})
}

func TestSplitByAdvertisedRcptMax(t *testing.T) {
	// RFC 9422 LIMITS RCPTMAX=2: the client never sends a third RCPT in a
	// transaction, so there is no 452 to read.
	var cmds []string
	addr, done := fakeServer(t, func(d *dialogue) {
		d.say("220 fake.test ESMTP")
		d.line()
		d.say("250-fake.test", "250-PIPELINING", "250 LIMITS RCPTMAX=2")
		for queued := 1; ; {
			cmd := d.line()
			cmds = append(cmds, cmd)
			switch {
			case cmd == "", strings.HasPrefix(cmd, "QUIT"):
				d.say("221 bye")
				return
			case cmd == "DATA":
				d.say("354 go ahead")
				for l := d.line(); l != "." && l != ""; l = d.line() {
				}
				d.say(fmt.Sprintf("250 queued as Q%d", queued))
				queued++
			default:
				d.say("250 ok")
			}
		}
	})
	c := mustDial(t, addr, nil)
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: addrs(3)}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	accepted(t, out, 3)
	if out[0].Reply != "queued as Q1" || out[1].Reply != "queued as Q1" || out[2].Reply != "queued as Q2" {
		t.Errorf("replies %q %q %q, want Q1 Q1 Q2", out[0].Reply, out[1].Reply, out[2].Reply)
	}
	c.Quit()
	<-done
	want := "MAIL FROM:<a@example.org> | RCPT TO:<r00@example.net> | RCPT TO:<r01@example.net> | DATA | " +
		"MAIL FROM:<a@example.org> | RCPT TO:<r02@example.net> | DATA | QUIT"
	if got := strings.Join(cmds, " | "); got != want {
		t.Errorf("commands\n  %s\nwant\n  %s", got, want)
	}
}
