package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gopop3 "github.com/knadh/go-pop3"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// These tests use scripted in-process servers for what Dovecot cannot be
// made to do; dovecot_test.go covers the real server.

func plainOpts(addr string) Options {
	return Options{Addr: addr, TLS: tlsmode.None, AllowPlaintextAuth: true, Timeout: 5 * time.Second}
}

func dialT(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := Dial(context.Background(), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greet sends a greeting and answers CAPA with capa (nil: -ERR).
func greet(s *pop3test.Session, capa ...string) bool {
	if s.Send("+OK ready <123.456@test>") != nil || !s.Expect("CAPA") {
		return false
	}
	if capa == nil {
		return s.Send("-ERR unknown command") == nil
	}
	return s.Send(append(append([]string{"+OK"}, capa...), ".")...) == nil
}

// syncBuffer is a log sink safe for the server and client goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func retrAll(t *testing.T, c *Client, num int) []byte {
	t.Helper()
	rc, err := c.Retr(context.Background(), num)
	if err != nil {
		t.Fatalf("Retr %d: %v", num, err)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Retr %d read: %v", num, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Retr %d close: %v", num, err)
	}
	return b
}

// withCRLF is what a server sends for msg: a final CRLF is added if absent.
func withCRLF(msg []byte) []byte {
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		return append(append([]byte{}, msg...), "\r\n"...)
	}
	return msg
}

func TestSessionAgainstMailbox(t *testing.T) {
	msgs := [][]byte{
		[]byte("Subject: one\r\n\r\nhello\r\n"),
		[]byte("Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n"),
		[]byte(""),
		[]byte("bare\nLF and bare\rCR\r\n.after bare LF\n.x\r\n"),
		[]byte("no final newline"),
		append(bytes.Repeat([]byte("y"), 100_000), "\r\n.\r\n"...),
	}
	for _, capa := range [][]string{pop3test.DefaultCapa, {"USER", "UIDL"}} {
		t.Run(strings.Join(capa, ","), func(t *testing.T) {
			mb := &pop3test.Mailbox{User: "alice", Pass: "pw", Messages: msgs, Capa: capa}
			srv := pop3test.NewServer(t, mb.Serve)
			c := dialT(t, plainOpts(srv.Addr))
			if got := c.APOPTimestamp(); got != "<1896.697170952@pop3test>" {
				t.Errorf("APOPTimestamp = %q", got)
			}
			if _, ok := c.Capabilities()["UIDL"]; !ok {
				t.Errorf("Capabilities = %v, want UIDL", c.Capabilities())
			}
			ctx := context.Background()
			if err := c.Auth(ctx, "alice", "pw"); err != nil {
				t.Fatalf("Auth: %v", err)
			}
			count, size, err := c.Stat(ctx)
			var wantSize int64
			for _, m := range msgs {
				wantSize += int64(len(m))
			}
			if err != nil || count != len(msgs) || size != wantSize {
				t.Errorf("Stat = %d, %d, %v; want %d, %d", count, size, err, len(msgs), wantSize)
			}
			all, err := c.ListAll(ctx)
			if err != nil {
				t.Fatalf("ListAll: %v", err)
			}
			if len(all) != len(msgs) {
				t.Fatalf("ListAll returned %d entries, want %d", len(all), len(msgs))
			}
			for i, mi := range all {
				want := MessageInfo{Num: i + 1, Size: int64(len(msgs[i])), UID: pop3test.UID(i)}
				if mi != want {
					t.Errorf("ListAll[%d] = %+v, want %+v", i, mi, want)
				}
			}
			for i, m := range msgs {
				if got := retrAll(t, c, i+1); !bytes.Equal(got, withCRLF(m)) {
					t.Errorf("message %d = %q, want %q", i+1, abbrev(got), abbrev(withCRLF(m)))
				}
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatalf("Quit: %v", err)
			}
			if err := c.Noop(ctx); !errors.Is(err, ErrClosed) {
				t.Errorf("Noop after Quit = %v, want ErrClosed", err)
			}
		})
	}
}

func TestDeleCommitsOnlyOnQuit(t *testing.T) {
	msgs := [][]byte{[]byte("a\r\n"), []byte("b\r\n"), []byte("c\r\n")}
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs}
	srv := pop3test.NewServer(t, mb.Serve)
	ctx := context.Background()

	c := dialT(t, plainOpts(srv.Addr))
	if err := c.Auth(ctx, "u", "p"); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	c.Close() // no QUIT: RFC 1939 §6, nothing is removed
	if n := len(mb.Remaining()); n != 3 {
		t.Fatalf("after DELE+Close %d messages remain, want 3", n)
	}

	c = dialT(t, plainOpts(srv.Addr))
	if err := c.Auth(ctx, "u", "p"); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(ctx, 1, 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mb.Remaining(); len(got) != 1 || string(got[0]) != "b\r\n" {
		t.Fatalf("after DELE 1 3 + QUIT remaining = %q, want [b]", got)
	}
}

func TestQuitErr(t *testing.T) {
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: [][]byte{[]byte("a\r\n")},
		Fault: func(s *pop3test.Session, cmd string) bool {
			if cmd == "QUIT" {
				s.Send("-ERR [SYS/TEMP] some deleted messages not removed")
				return true
			}
			return false
		}}
	srv := pop3test.NewServer(t, mb.Serve)
	ctx := context.Background()
	c := dialT(t, plainOpts(srv.Addr))
	if err := c.Auth(ctx, "u", "p"); err != nil {
		t.Fatal(err)
	}
	if err := c.Dele(ctx, 1); err != nil {
		t.Fatal(err)
	}
	err := c.Quit(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Command != "QUIT" || e.Code != "SYS/TEMP" || !e.Temporary() {
		t.Fatalf("Quit = %#v, want *Error QUIT SYS/TEMP", err)
	}
	if err := c.Noop(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Noop after failed Quit = %v, want ErrClosed", err)
	}
}

func TestAuthErrors(t *testing.T) {
	const secret = "s3cret-Passw0rd"
	tests := []struct {
		resp      string
		code      string
		temporary bool
		auth      bool
	}{
		{"-ERR [AUTH] Authentication failed.", "AUTH", false, true},
		{"-ERR invalid password", "", false, true},
		{"-ERR [IN-USE] mailbox locked by another session", "IN-USE", true, false},
		{"-ERR [LOGIN-DELAY] wait 300 seconds", "LOGIN-DELAY", true, false},
		{"-ERR [SYS/TEMP] backend down", "SYS/TEMP", true, false},
		{"-ERR [SYS/PERM] account disabled", "SYS/PERM", false, false},
		{"-ERR [AUTH] wrong password " + secret, "AUTH", false, true},
	}
	for _, tc := range tests {
		for _, sasl := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sasl=%v", tc.resp, sasl), func(t *testing.T) {
				capa := []string{"USER"}
				if sasl {
					capa = append(capa, "SASL PLAIN")
				}
				srv := pop3test.NewServer(t, func(s *pop3test.Session) {
					if !greet(s, capa...) {
						return
					}
					if sasl {
						cmd, _ := s.ReadCommand()
						if !strings.HasPrefix(cmd, "AUTH PLAIN ") {
							t.Errorf("got %q, want AUTH PLAIN with initial response", cmd)
						}
					} else if !s.Expect("USER alice") || s.Send("+OK") != nil || !s.Expect("PASS "+secret) {
						return
					}
					s.Send(tc.resp)
					s.Expect("NOOP")
					s.Send("+OK")
				})
				var logs syncBuffer
				opts := plainOpts(srv.Addr)
				opts.Logger = debugLogger(&logs)
				c := dialT(t, opts)
				err := c.Auth(context.Background(), "alice", secret)
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("Auth = %v, want *Error", err)
				}
				if e.Code != tc.code || e.Temporary() != tc.temporary || errors.Is(err, ErrAuth) != tc.auth {
					t.Errorf("code %q temporary %v auth %v; want %q %v %v",
						e.Code, e.Temporary(), errors.Is(err, ErrAuth), tc.code, tc.temporary, tc.auth)
				}
				wantCmd := "PASS ***"
				if sasl {
					wantCmd = "AUTH PLAIN ***"
				}
				if e.Command != wantCmd {
					t.Errorf("Command = %q, want %q", e.Command, wantCmd)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error text contains the password: %v", err)
				}
				if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "AGFsaWNl") {
					t.Errorf("transcript contains the password or SASL payload:\n%s", logs.String())
				}
				// A -ERR leaves the session usable.
				if err := c.Noop(context.Background()); err != nil {
					t.Errorf("Noop after -ERR: %v", err)
				}
			})
		}
	}
}

func TestUnknownErrIsTemporary(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if greet(s) && s.Expect("RETR 1") {
			s.Send("-ERR something odd")
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	_, err := c.Retr(context.Background(), 1)
	var e *Error
	if !errors.As(err, &e) || !e.Temporary() || errors.Is(err, ErrAuth) || e.Command != "RETR 1" {
		t.Fatalf("Retr = %v, want temporary non-auth *Error for RETR 1", err)
	}
}

func TestSASLPlain(t *testing.T) {
	longUser := strings.Repeat("u", 200) // initial response would exceed 255 octets
	for _, user := range []string{"alice", longUser} {
		t.Run(fmt.Sprintf("user-len-%d", len(user)), func(t *testing.T) {
			var seen []string
			var mu sync.Mutex
			mb := &pop3test.Mailbox{User: user, Pass: "pw", Capa: []string{"SASL PLAIN LOGIN", "UIDL"},
				Fault: func(s *pop3test.Session, cmd string) bool {
					mu.Lock()
					seen = append(seen, cmd)
					mu.Unlock()
					return false
				}}
			srv := pop3test.NewServer(t, mb.Serve)
			var logs syncBuffer
			opts := plainOpts(srv.Addr)
			opts.Logger = debugLogger(&logs)
			c := dialT(t, opts)
			if err := c.Auth(context.Background(), user, "pw"); err != nil {
				t.Fatalf("Auth: %v", err)
			}
			if err := c.Quit(context.Background()); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			wantFirst := "AUTH PLAIN "
			if len(user) > 100 {
				wantFirst = "AUTH PLAIN"
			}
			if len(seen) < 2 || !strings.HasPrefix(seen[1], wantFirst) || (len(user) > 100 && seen[1] != "AUTH PLAIN") {
				t.Errorf("commands = %q, want CAPA then %q...", seen, wantFirst)
			}
			for _, cmd := range seen {
				if strings.HasPrefix(cmd, "USER") {
					t.Errorf("USER sent although SASL PLAIN was offered")
				}
			}
			if strings.Contains(logs.String(), "AHB3") || strings.Contains(logs.String(), "AGFsaWNl") {
				t.Errorf("transcript contains the SASL payload:\n%s", logs.String())
			}
		})
	}
}

func TestPlaintextRefused(t *testing.T) {
	var got []string
	var mu sync.Mutex
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Fault: func(s *pop3test.Session, cmd string) bool {
		mu.Lock()
		got = append(got, cmd)
		mu.Unlock()
		return false
	}}
	srv := pop3test.NewServer(t, mb.Serve)
	opts := plainOpts(srv.Addr)
	opts.AllowPlaintextAuth = false
	c := dialT(t, opts)
	if err := c.Auth(context.Background(), "u", "p"); !errors.Is(err, ErrPlaintextRefused) {
		t.Fatalf("Auth = %v, want ErrPlaintextRefused", err)
	}
	c.Quit(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "CAPA,QUIT" {
		t.Errorf("server saw %q, want only CAPA and QUIT", got)
	}
}

func TestSTLSRefusals(t *testing.T) {
	tests := []struct {
		name   string
		script func(s *pop3test.Session)
		want   error
	}{
		{"not in CAPA", func(s *pop3test.Session) {
			if greet(s, "USER", "UIDL") {
				assertNoMoreCommands(t, s)
			}
		}, ErrNoSTLS},
		{"CAPA unsupported", func(s *pop3test.Session) {
			if greet(s) {
				assertNoMoreCommands(t, s)
			}
		}, ErrNoSTLS},
		{"STLS -ERR", func(s *pop3test.Session) {
			if greet(s, "STLS") && s.Expect("STLS") {
				s.Send("-ERR TLS not available")
				assertNoMoreCommands(t, s)
			}
		}, ErrNoSTLS},
		{"plaintext injected after +OK", func(s *pop3test.Session) {
			if greet(s, "STLS") && s.Expect("STLS") {
				s.Send("+OK begin TLS", "+OK injected")
				assertNoMoreCommands(t, s)
			}
		}, ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, tc.script)
			opts := plainOpts(srv.Addr)
			opts.TLS = tlsmode.StartTLS
			c, err := Dial(context.Background(), opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Dial = %v, %v; want %v", c, err, tc.want)
			}
			srv.Close() // waits for the script's checks
		})
	}
}

// assertNoMoreCommands fails if the client sends anything before closing.
func assertNoMoreCommands(t *testing.T, s *pop3test.Session) {
	if cmd, err := s.ReadCommand(); err == nil {
		t.Errorf("client sent %q after refusing", cmd)
	}
}

func TestBadGreetings(t *testing.T) {
	tests := []struct {
		name  string
		send  string
		check func(error) bool
	}{
		{"garbage", "HELLO THERE\r\n", func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"+OKAY is not +OK", "+OKAY\r\n", func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"-ERR", "-ERR [SYS/TEMP] too busy\r\n", func(err error) bool {
			var e *Error
			return errors.As(err, &e) && e.Command == "greeting" && e.Temporary()
		}},
		{"closed", "", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"partial line then close", "+OK hal", func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"over-long", "+OK " + strings.Repeat("x", 5000) + "\r\n", func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"endless line", "+OK " + strings.Repeat("x", 1<<20), func(err error) bool { return errors.Is(err, ErrProtocol) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, func(s *pop3test.Session) {
				s.SendRaw([]byte(tc.send))
			})
			_, err := Dial(context.Background(), plainOpts(srv.Addr))
			if err == nil || !tc.check(err) {
				t.Fatalf("Dial error = %v", err)
			}
		})
	}
}

func TestMalformedListings(t *testing.T) {
	tests := []struct {
		name, cmd string
		lines     []string
		call      func(*Client) error
	}{
		{"LIST non-numeric", "LIST", []string{"+OK", "1 abc", "."}, func(c *Client) error { _, err := c.List(context.Background()); return err }},
		{"LIST over-long line", "LIST", []string{"+OK", "1 " + strings.Repeat("9", 5000), "."}, func(c *Client) error { _, err := c.List(context.Background()); return err }},
		{"UIDL control char", "UIDL", []string{"+OK", "1 a\x01b", "."}, func(c *Client) error { _, err := c.UIDL(context.Background()); return err }},
		{"STAT garbage", "STAT", []string{"+OK lots"}, func(c *Client) error { _, _, err := c.Stat(context.Background()); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, func(s *pop3test.Session) {
				if greet(s) && s.Expect(tc.cmd) {
					s.Send(tc.lines...)
				}
			})
			c := dialT(t, plainOpts(srv.Addr))
			err := tc.call(c)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if err := c.Noop(context.Background()); err == nil || !errors.Is(err, ErrProtocol) {
				t.Errorf("Noop after protocol error = %v, want the earlier error", err)
			}
		})
	}
}

func TestUIDLUnsupported(t *testing.T) {
	for _, pipelining := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			capa := []string{"USER"}
			if pipelining {
				capa = append(capa, "PIPELINING")
			}
			mb := &pop3test.Mailbox{User: "u", Pass: "p", Capa: capa,
				Messages: [][]byte{[]byte("a\r\n"), []byte("bb\r\n")},
				Fault: func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "UIDL") {
						s.Send("-ERR command not implemented")
						return true
					}
					return false
				}}
			srv := pop3test.NewServer(t, mb.Serve)
			c := dialT(t, plainOpts(srv.Addr))
			ctx := context.Background()
			if err := c.Auth(ctx, "u", "p"); err != nil {
				t.Fatal(err)
			}
			_, err := c.UIDL(ctx)
			var e *Error
			if !errors.Is(err, ErrNoUIDL) || !errors.As(err, &e) {
				t.Fatalf("UIDL = %v, want ErrNoUIDL wrapping *Error", err)
			}
			list, err := c.ListAll(ctx)
			if !errors.Is(err, ErrNoUIDL) || len(list) != 2 || list[1] != (MessageInfo{Num: 2, Size: 4}) {
				t.Fatalf("ListAll = %+v, %v; want LIST entries and ErrNoUIDL", list, err)
			}
			if err := c.Noop(ctx); err != nil {
				t.Errorf("session not usable after UIDL -ERR: %v", err)
			}
		})
	}
}

func TestListAllPipelinedInOneWrite(t *testing.T) {
	var pipelined bool
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: [][]byte{[]byte("a\r\n")},
		Fault: func(s *pop3test.Session, cmd string) bool {
			if cmd == "LIST" {
				// UIDL came in the same write, so it is already buffered.
				pipelined = s.R.Buffered() > 0
			}
			return false
		}}
	srv := pop3test.NewServer(t, mb.Serve)
	c := dialT(t, plainOpts(srv.Addr))
	if err := c.Auth(context.Background(), "u", "p"); err != nil {
		t.Fatal(err)
	}
	got, err := c.ListAll(context.Background())
	if err != nil || len(got) != 1 || got[0] != (MessageInfo{Num: 1, Size: 3, UID: pop3test.UID(0)}) {
		t.Fatalf("ListAll = %+v, %v", got, err)
	}
	c.Quit(context.Background())
	srv.Close()
	if !pipelined {
		t.Errorf("LIST and UIDL were not sent together although PIPELINING was offered")
	}
}

func TestListAllMismatch(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if greet(s, "UIDL") && s.Expect("LIST") && s.Send("+OK", "1 10", "2 20", ".") == nil && s.Expect("UIDL") {
			s.Send("+OK", "1 aaa", "3 ccc", ".")
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	if _, err := c.ListAll(context.Background()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ListAll = %v, want ErrProtocol", err)
	}
}

// TestDelePipelined has the server read a whole window of DELE commands
// before it answers any: a client that waited for each answer would stall
// and time out.
func TestDelePipelined(t *testing.T) {
	const total, failing = 2*deleWindow + 22, deleWindow + 6
	var received int
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if !greet(s, "PIPELINING") {
			return
		}
		next := 1
		for next <= total {
			batch := min(deleWindow, total-next+1)
			var resp []string
			for i := 0; i < batch; i++ {
				cmd, err := s.ReadCommand()
				if err != nil {
					return
				}
				received++
				if want := fmt.Sprintf("DELE %d", next+i); cmd != want {
					t.Errorf("got %q, want %q", cmd, want)
				}
				if next+i == failing {
					resp = append(resp, fmt.Sprintf("-ERR message %d already deleted", failing))
				} else {
					resp = append(resp, "+OK")
				}
			}
			s.Send(resp...)
			next += batch
			if next > failing {
				break
			}
		}
		if s.Expect("NOOP") {
			s.Send("+OK")
		}
	})
	opts := plainOpts(srv.Addr)
	opts.Timeout = 2 * time.Second
	c := dialT(t, opts)
	nums := make([]int, total)
	for i := range nums {
		nums[i] = i + 1
	}
	err := c.Dele(context.Background(), nums...)
	var e *Error
	if !errors.As(err, &e) || e.Command != fmt.Sprintf("DELE %d", failing) {
		t.Fatalf("Dele = %v, want *Error for DELE %d", err, failing)
	}
	// The session is in sync: the rest of the failing batch was read.
	if err := c.Noop(context.Background()); err != nil {
		t.Fatalf("Noop after Dele: %v", err)
	}
	c.Close()
	srv.Close()
	if received != 2*deleWindow {
		t.Errorf("server received %d DELEs, want %d (no batch after the failing one)", received, 2*deleWindow)
	}
}

// TestDeleOneByOne: without PIPELINING each DELE waits for its answer.
func TestDeleOneByOne(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if !greet(s, "USER") {
			return
		}
		for i := 1; i <= 5; i++ {
			if !s.Expect(fmt.Sprintf("DELE %d", i)) {
				return
			}
			if n := s.R.Buffered(); n != 0 {
				t.Errorf("client sent %d more bytes before the answer to DELE %d", n, i)
			}
			time.Sleep(5 * time.Millisecond) // give a pipelining client time to show itself
			if i == 3 {
				s.Send("-ERR [SYS/PERM] no")
				return
			}
			s.Send("+OK")
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	err := c.Dele(context.Background(), 1, 2, 3, 4, 5)
	var e *Error
	if !errors.As(err, &e) || e.Command != "DELE 3" || e.Temporary() {
		t.Fatalf("Dele = %v, want permanent *Error for DELE 3", err)
	}
}

func TestRetrTruncated(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if greet(s) && s.Expect("RETR 1") {
			s.SendRaw([]byte("+OK 100 octets\r\nSubject: x\r\n\r\npartial body"))
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	rc, err := c.Retr(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read = %q, %v; want io.ErrUnexpectedEOF", got, err)
	}
	if !strings.Contains(err.Error(), "RETR 1") {
		t.Errorf("error %q does not name the command", err)
	}
	if string(got) != "Subject: x\r\n\r\npartial body" {
		t.Errorf("partial data = %q", got)
	}
	if err := rc.Close(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Close = %v, want the read error", err)
	}
	if err := c.Noop(context.Background()); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Noop after truncated RETR = %v, want poisoned client", err)
	}
	if err := c.Quit(context.Background()); err == nil {
		t.Errorf("Quit on a broken session returned nil")
	}
}

func TestRetrCloseDrainsAndBodyOpen(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef\r\n"), 50_000)
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: [][]byte{big, []byte("second\r\n")}}
	srv := pop3test.NewServer(t, mb.Serve)
	c := dialT(t, plainOpts(srv.Addr))
	ctx := context.Background()
	if err := c.Auth(ctx, "u", "p"); err != nil {
		t.Fatal(err)
	}
	rc, err := c.Retr(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(rc, buf); err != nil || string(buf) != "0123456789" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	if err := c.Noop(ctx); !errors.Is(err, ErrBodyOpen) {
		t.Errorf("Noop with open body = %v, want ErrBodyOpen", err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := rc.Read(buf); err == nil {
		t.Errorf("Read after Close succeeded")
	}
	if got := retrAll(t, c, 2); string(got) != "second\r\n" {
		t.Errorf("message after drained one = %q", got)
	}
}

func TestTimeouts(t *testing.T) {
	body := strings.Repeat("line of a slowly sent message\r\n", 20)

	t.Run("stalled greeting", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) { s.ReadCommand() })
		opts := plainOpts(srv.Addr)
		opts.Timeout = 200 * time.Millisecond
		_, err := Dial(context.Background(), opts)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "greeting") {
			t.Fatalf("Dial = %v, want deadline exceeded on greeting", err)
		}
	})

	t.Run("stalled body", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if greet(s) && s.Expect("RETR 1") {
				s.SendRaw([]byte("+OK\r\n" + body))
				s.ReadCommand() // stall until the client gives up
			}
		})
		opts := plainOpts(srv.Addr)
		opts.Timeout = 200 * time.Millisecond
		c := dialT(t, opts)
		rc, err := c.Retr(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if !errors.Is(err, os.ErrDeadlineExceeded) || string(got) != body {
			t.Fatalf("read %d bytes, %v; want all sent bytes then deadline exceeded", len(got), err)
		}
		if err := c.Noop(context.Background()); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Noop after timeout = %v, want poisoned client", err)
		}
	})

	t.Run("slow but progressing body", func(t *testing.T) {
		// Each gap is well below Timeout, the whole transfer well above it.
		const gap, timeout = 30 * time.Millisecond, 250 * time.Millisecond
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if !greet(s) || !s.Expect("RETR 1") || s.Send("+OK") != nil {
				return
			}
			for i := 0; i < len(body); i += 32 {
				time.Sleep(gap)
				if s.SendRaw([]byte(body[i:min(i+32, len(body))])) != nil {
					return
				}
			}
			s.Send(".")
		})
		opts := plainOpts(srv.Addr)
		opts.Timeout = timeout
		c := dialT(t, opts)
		start := time.Now()
		if got := retrAll(t, c, 1); string(got) != body {
			t.Fatalf("body = %q", got)
		}
		if elapsed := time.Since(start); elapsed < timeout {
			t.Fatalf("transfer took %v, not longer than Timeout %v: test does not show what it should", elapsed, timeout)
		}
	})

	t.Run("context deadline sooner than Timeout", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if greet(s) && s.Expect("NOOP") {
				s.ReadCommand()
			}
		})
		opts := plainOpts(srv.Addr)
		opts.Timeout = 30 * time.Second
		c := dialT(t, opts)
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.Noop(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Noop = %v, want context.DeadlineExceeded", err)
		}
		if time.Since(start) >= opts.Timeout {
			t.Errorf("Noop waited for Timeout instead of the context deadline")
		}
	})

	t.Run("context cancelled during body", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if greet(s) && s.Expect("RETR 1") {
				s.SendRaw([]byte("+OK\r\n" + body))
				s.ReadCommand()
			}
		})
		opts := plainOpts(srv.Addr)
		opts.Timeout = 30 * time.Second
		c := dialT(t, opts)
		ctx, cancel := context.WithCancel(context.Background())
		rc, err := c.Retr(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(body))
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err = rc.Read(buf)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Read after cancel = %v, want context.Canceled", err)
		}
		if err := c.Noop(context.Background()); !errors.Is(err, context.Canceled) {
			t.Errorf("Noop after cancel = %v, want poisoned client", err)
		}
	})

	t.Run("cancelled context is not used", func(t *testing.T) {
		mb := &pop3test.Mailbox{User: "u", Pass: "p"}
		srv := pop3test.NewServer(t, mb.Serve)
		c := dialT(t, plainOpts(srv.Addr))
		if err := c.Auth(context.Background(), "u", "p"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Noop(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Noop = %v, want context.Canceled", err)
		}
		if err := c.Noop(context.Background()); err != nil {
			t.Errorf("session broken by a command that was never sent: %v", err)
		}
	})
}

func TestCloseAbortsBlockedCommand(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if greet(s) && s.Expect("NOOP") {
			s.ReadCommand()
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	time.AfterFunc(50*time.Millisecond, func() { c.Close() })
	if err := c.Noop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Noop = %v, want ErrClosed", err)
	}
}

func TestErrorTemporaryTable(t *testing.T) {
	tests := []struct {
		e         Error
		temporary bool
		auth      bool
	}{
		{Error{Command: "RETR 1", Code: ""}, true, false},
		{Error{Command: "RETR 1", Code: "SYS/PERM"}, false, false},
		{Error{Command: "PASS ***", Code: "SYS/TEMP/DISK"}, true, false},
		{Error{Command: "USER bob", Code: ""}, false, true},
		{Error{Command: "AUTH PLAIN ***", Code: "AUTH"}, false, true},
		{Error{Command: "QUIT", Code: "IN-USE"}, true, false},
		{Error{Command: "PASS ***", Code: "UNKNOWN-CODE"}, false, true},
	}
	for _, tc := range tests {
		if got := tc.e.Temporary(); got != tc.temporary {
			t.Errorf("%+v Temporary = %v, want %v", tc.e, got, tc.temporary)
		}
		if got := errors.Is(&tc.e, ErrAuth); got != tc.auth {
			t.Errorf("%+v Is(ErrAuth) = %v, want %v", tc.e, got, tc.auth)
		}
	}
	if got := parseCode("-ERR [sys/temp] x"); got != "SYS/TEMP" {
		t.Errorf("parseCode = %q", got)
	}
	if got := parseCode("-ERR no code [IN-USE]"); got != "" {
		t.Errorf("parseCode of code not at start = %q", got)
	}
}

// TestDifferentialGoPop3Raw records where knadh/go-pop3 v1.0.2 and this
// client disagree on bytes a real server like Dovecot never sends (it
// always sends CRLF), served raw by the in-process Mailbox. Ours must
// return the bytes exactly; go-pop3's documented behaviour is asserted so
// a change in it is noticed.
func TestDifferentialGoPop3Raw(t *testing.T) {
	tests := []struct {
		name   string
		msg    string
		gopop3 string // what go-pop3 RetrRaw returns
	}{
		{"CRLF only: identical", "a\r\n..b\r\n.\r\n", "a\r\n..b\r\n.\r\n"},
		{"bare LF is rewritten to CRLF by go-pop3", "bare\nLF\r\n", "bare\r\nLF\r\n"},
		{"bare CR kept by both", "bare\rCR\r\n", "bare\rCR\r\n"},
		// A dot line after a bare LF is data (a server stuffs only after
		// CRLF); go-pop3 takes it for the terminator and returns a
		// truncated message, leaving the rest unread on the connection.
		{"dot after bare LF truncates in go-pop3", "x\n.\r\nrest\r\n", "x\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: [][]byte{[]byte(tc.msg)}}
			srv := pop3test.NewServer(t, mb.Serve)

			c := dialT(t, plainOpts(srv.Addr))
			if err := c.Auth(context.Background(), "u", "p"); err != nil {
				t.Fatal(err)
			}
			if got := retrAll(t, c, 1); string(got) != tc.msg {
				t.Errorf("ours = %q, want %q", got, tc.msg)
			}

			host, port, _ := strings.Cut(srv.Addr, ":")
			p := 0
			fmt.Sscan(port, &p)
			conn, err := gopop3.New(gopop3.Opt{Host: host, Port: p}).NewConn()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Quit()
			if err := conn.Auth("u", "p"); err != nil {
				t.Fatal(err)
			}
			buf, err := conn.RetrRaw(1)
			if err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.gopop3 {
				t.Errorf("go-pop3 = %q, recorded behaviour %q", buf.String(), tc.gopop3)
			}
		})
	}
}

// DeleQuit sends QUIT with the last batch of DELEs when the server offers
// PIPELINING: the server here reads every command up to QUIT before it
// answers any, which a client waiting between DELE and QUIT would not
// survive. A refused DELE is reported and QUIT still decides; without
// PIPELINING each command waits for its answer.
func TestDeleQuit(t *testing.T) {
	tests := []struct {
		name      string
		capa      string
		n         int
		refuse    int    // the DELE answered -ERR; 0: none
		quitReply string // the reply to QUIT
		wantDele  string // the Command of deleErr; "" for nil
		wantQuit  bool   // QUIT answered +OK
	}{
		{"pipelined, one batch", "PIPELINING", 5, 0, "+OK bye", "", true},
		{"pipelined, several batches", "PIPELINING", 2*deleWindow + 3, 0, "+OK bye", "", true},
		{"pipelined, a DELE refused", "PIPELINING", 5, 3, "+OK bye", "DELE 3", true},
		{"pipelined, QUIT refused", "PIPELINING", 5, 0, "-ERR cannot update", "", false},
		{"one at a time", "USER", 3, 0, "+OK bye", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			srv := pop3test.NewServer(t, func(s *pop3test.Session) {
				if !greet(s, tt.capa) {
					return
				}
				var pending []string
				answer := func(cmd string) string {
					if cmd == fmt.Sprintf("DELE %d", tt.refuse) {
						return "-ERR no such message"
					}
					return "+OK"
				}
				for {
					cmd, err := s.ReadCommand()
					if err != nil {
						return
					}
					got = append(got, cmd)
					pipelined := tt.capa == "PIPELINING"
					lastOfBatch := len(pending)+1 == deleWindow
					switch {
					case cmd == "QUIT":
						s.Send(append(pending, tt.quitReply)...)
						return
					case !pipelined:
						s.Send(answer(cmd))
					case lastOfBatch:
						// A full batch is answered at once (the client
						// reads its replies before the next one).
						s.Send(append(pending, answer(cmd))...)
						pending = nil
					default:
						pending = append(pending, answer(cmd))
					}
				}
			})
			opts := plainOpts(srv.Addr)
			opts.Timeout = 2 * time.Second
			c := dialT(t, opts)
			nums := make([]int, tt.n)
			for i := range nums {
				nums[i] = i + 1
			}
			deleErr, err := c.DeleQuit(context.Background(), nums...)
			var e *Error
			switch {
			case tt.wantDele == "" && deleErr != nil:
				t.Errorf("deleErr = %v, want nil", deleErr)
			case tt.wantDele != "" && (!errors.As(deleErr, &e) || e.Command != tt.wantDele):
				t.Errorf("deleErr = %v, want *Error for %s", deleErr, tt.wantDele)
			}
			if (err == nil) != tt.wantQuit {
				t.Errorf("QUIT error = %v, want ok=%v", err, tt.wantQuit)
			}
			srv.Close()
			if len(got) != tt.n+1 || got[len(got)-1] != "QUIT" {
				t.Errorf("server got %d commands ending %q, want %d DELEs and QUIT", len(got), got[len(got)-1], tt.n)
			}
		})
	}
}
