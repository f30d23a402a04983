package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
)

// fetched is what one call to RetrQueue.Next gave.
type fetched struct {
	num  int
	body []byte
	err  error
}

// drainQueue reads q to io.EOF, checking after each Next that no more than
// depth responses were outstanding, and returns what each Next gave.
func drainQueue(t *testing.T, q *RetrQueue) []fetched {
	t.Helper()
	var out []fetched
	for i := 0; ; i++ {
		if i > len(q.nums) {
			t.Fatalf("Next returned more than %d messages", len(q.nums))
		}
		num, body, err := q.Next(context.Background())
		if err == io.EOF {
			if body != nil || num != 0 {
				t.Fatalf("Next at the end = %d, %v, io.EOF", num, body)
			}
			return out
		}
		if ahead := q.sent - (q.next - 1); ahead > q.depth {
			t.Fatalf("after Next for message %d, %d commands outstanding, depth %d", num, ahead, q.depth)
		}
		f := fetched{num: num, err: err}
		if err == nil {
			f.body, f.err = io.ReadAll(body)
			if cerr := body.Close(); cerr != nil && f.err == nil {
				f.err = cerr
			}
		} else if body != nil {
			t.Fatalf("Next for %d returned a body with error %v", num, err)
		}
		out = append(out, f)
	}
}

func loggedIn(t *testing.T, mb *pop3test.Mailbox, addr string) *Client {
	t.Helper()
	c := dialT(t, plainOpts(addr))
	if err := c.Auth(context.Background(), mb.User, mb.Pass); err != nil {
		t.Fatalf("Auth: %v", err)
	}
	return c
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// randomMessages returns n messages of mixed sizes (up to about 200 KB,
// a few above the 64 KiB buffer) built to stress dot-stuffing: lines
// starting with ".", a "." line, bare CR and LF, NUL and 8-bit bytes,
// some without a final CRLF.
func randomMessages(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	pieces := []string{".", "..", ".\r\n", "\r\n.\r\n", "\r\n", "\n", "\r", "\x00", "\xff", "line of text ", "\r\n..x"}
	msgs := make([][]byte, n)
	for i := range msgs {
		size := rng.IntN(4 << 10)
		if rng.IntN(10) == 0 {
			size = rng.IntN(200 << 10)
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "Subject: %d\r\n\r\n", i)
		for b.Len() < size {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		if rng.IntN(4) != 0 {
			b.WriteString("\r\n")
		}
		msgs[i] = b.Bytes()
	}
	return msgs
}

func TestRetrPipelinedInOrder(t *testing.T) {
	msgs := randomMessages(40, 1)
	for _, tc := range []struct {
		name      string
		capa      []string
		depth     int
		wantDepth int
	}{
		{"PIPELINING depth 1", pop3test.DefaultCapa, 1, 1},
		{"PIPELINING depth 3", pop3test.DefaultCapa, 3, 3},
		{"PIPELINING depth 16", pop3test.DefaultCapa, 16, 16},
		{"PIPELINING depth 0 is 1", pop3test.DefaultCapa, 0, 1},
		{"PIPELINING depth capped", pop3test.DefaultCapa, 1000, pipelineWindow},
		{"no PIPELINING: one at a time", []string{"USER", "UIDL"}, 16, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs, Capa: tc.capa}
			srv := pop3test.NewServer(t, mb.Serve)
			c := loggedIn(t, mb, srv.Addr)
			if got, want := c.Pipelining(), slices.Contains(tc.capa, "PIPELINING"); got != want {
				t.Fatalf("Pipelining = %v, want %v", got, want)
			}
			// Out of order and repeated numbers are the caller's business.
			nums := append(seq(1, len(msgs)), 5, 1)
			q := c.RetrPipelined(context.Background(), nums, tc.depth)
			if q.Depth() != tc.wantDepth {
				t.Fatalf("Depth = %d, want %d", q.Depth(), tc.wantDepth)
			}
			got := drainQueue(t, q)
			if len(got) != len(nums) {
				t.Fatalf("%d messages, want %d", len(got), len(nums))
			}
			for i, f := range got {
				if f.num != nums[i] || f.err != nil {
					t.Fatalf("message %d: Next = %d, %v; want %d", i, f.num, f.err, nums[i])
				}
				if want := withCRLF(msgs[nums[i]-1]); !bytes.Equal(f.body, want) {
					t.Fatalf("message %d: %q, want %q", f.num, abbrev(f.body), abbrev(want))
				}
			}
			// Done: the connection is the client's again.
			if err := c.Dele(context.Background(), 1); err != nil {
				t.Fatalf("Dele after the queue: %v", err)
			}
			if err := q.Close(context.Background()); err != nil {
				t.Errorf("Close of a finished queue = %v", err)
			}
			if _, _, err := q.Next(context.Background()); !errors.Is(err, ErrQueueClosed) {
				t.Errorf("Next after Close = %v, want ErrQueueClosed", err)
			}
			if err := c.Quit(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := len(mb.Remaining()); n != len(msgs)-1 {
				t.Errorf("%d messages remain, want %d", n, len(msgs)-1)
			}
		})
	}
}

func TestRetrPipelinedDepthsIdentical(t *testing.T) {
	msgs := randomMessages(60, 2)
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs}
	srv := pop3test.NewServer(t, mb.Serve)
	c := loggedIn(t, mb, srv.Addr)
	nums := seq(1, len(msgs))
	var oneByOne [][]byte
	for _, n := range nums {
		oneByOne = append(oneByOne, retrAll(t, c, n))
	}
	for _, depth := range []int{1, 16} {
		got := drainQueue(t, c.RetrPipelined(context.Background(), nums, depth))
		for i, f := range got {
			if f.err != nil || !bytes.Equal(f.body, oneByOne[i]) {
				t.Fatalf("depth %d, message %d: %v, %q; Retr gave %q", depth, f.num, f.err, abbrev(f.body), abbrev(oneByOne[i]))
			}
		}
	}
}

func TestRetrPipelinedErrInMiddle(t *testing.T) {
	msgs := [][]byte{[]byte("one\r\n"), []byte("two\r\n"), []byte("three\r\n"), []byte("four\r\n")}
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs,
		Fault: func(s *pop3test.Session, cmd string) bool {
			if cmd == "RETR 2" {
				s.Send("-ERR [SYS/TEMP] try again later")
				return true
			}
			return false
		}}
	srv := pop3test.NewServer(t, mb.Serve)
	c := loggedIn(t, mb, srv.Addr)
	got := drainQueue(t, c.RetrPipelined(context.Background(), []int{1, 2, 9, 3, 4}, 4))
	want := []struct {
		num  int
		body string
		code string // "-": no error
	}{{1, "one\r\n", "-"}, {2, "", "SYS/TEMP"}, {9, "", ""}, {3, "three\r\n", "-"}, {4, "four\r\n", "-"}}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i, w := range want {
		f := got[i]
		if f.num != w.num {
			t.Fatalf("message %d is %d, want %d", i, f.num, w.num)
		}
		if w.code == "-" {
			if f.err != nil || string(f.body) != w.body {
				t.Errorf("RETR %d = %q, %v; want %q", f.num, f.body, f.err, w.body)
			}
			continue
		}
		var e *Error
		if !errors.As(f.err, &e) || e.Command != "RETR "+strconv.Itoa(w.num) || e.Code != w.code {
			t.Errorf("RETR %d = %v, want *Error for RETR %d with code %q", f.num, f.err, w.num, w.code)
		}
	}
	if err := c.Noop(context.Background()); err != nil {
		t.Errorf("Noop after the queue: %v", err)
	}
}

// TestRetrPipelinedCutShort: a connection that ends in a response fails
// that message, every later one, and the client.
func TestRetrPipelinedCutShort(t *testing.T) {
	type cut struct {
		name  string
		wire  string // sent for RETR 3 before the server closes
		reset bool   // close at once (RST for unread commands), not FIN
	}
	var cuts []cut
	for _, c := range []cut{
		{name: "mid-body", wire: "+OK\r\nSubject: three\r\n\r\npartial"},
		{name: "before the terminator", wire: "+OK\r\nSubject: three\r\n\r\nwhole line\r\n"},
		{name: "inside the terminator", wire: "+OK\r\nSubject: three\r\n\r\nwhole line\r\n.\r"},
		{name: "in the status line", wire: "+O"},
		{name: "no response at all", wire: ""},
	} {
		cuts = append(cuts, c)
		c.name, c.reset = c.name+", reset", true
		cuts = append(cuts, c)
	}
	for _, tc := range cuts {
		t.Run(tc.name, func(t *testing.T) {
			msgs := [][]byte{[]byte("one\r\n"), []byte("two\r\n"), []byte("three\r\n"), []byte("four\r\n"), []byte("five\r\n")}
			mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs,
				Fault: func(s *pop3test.Session, cmd string) bool {
					if cmd == "RETR 3" {
						s.SendRaw([]byte(tc.wire))
						if tc.reset {
							s.Conn.Close()
						} else {
							s.Conn.(*net.TCPConn).CloseWrite()
							io.Copy(io.Discard, s.R) // read on, so no RST
						}
						return true
					}
					return false
				}}
			srv := pop3test.NewServer(t, mb.Serve)
			c := loggedIn(t, mb, srv.Addr)
			q := c.RetrPipelined(context.Background(), seq(1, 5), 3)
			got := drainQueue(t, q)
			if len(got) != 5 {
				t.Fatalf("got %d messages, want 5", len(got))
			}
			for i, f := range got[:2] {
				if f.err != nil || string(f.body) != string(msgs[i]) {
					t.Errorf("RETR %d = %q, %v", f.num, f.body, f.err)
				}
			}
			first := got[2].err
			// After an RST the kernel may report ECONNRESET, or a write
			// may fail first; after a FIN the reader must see the cut.
			if first == nil || (!tc.reset && !errors.Is(first, io.ErrUnexpectedEOF)) {
				t.Fatalf("RETR 3 = %v, want io.ErrUnexpectedEOF", first)
			}
			for _, f := range got[2:] {
				if !errors.Is(f.err, first) || !strings.Contains(f.err.Error(), "RETR "+strconv.Itoa(f.num)) {
					t.Errorf("RETR %d = %v, want %v naming RETR %d", f.num, f.err, first, f.num)
				}
			}
			if err := c.Noop(context.Background()); !errors.Is(err, first) {
				t.Errorf("Noop after the queue broke = %v, want the broken client's error", err)
			}
			if err := q.Close(context.Background()); !errors.Is(err, first) {
				t.Errorf("Close = %v, want the broken client's error", err)
			}
			if err := c.Quit(context.Background()); err == nil {
				t.Errorf("Quit on a broken session returned nil")
			}
		})
	}
}

// TestRetrPipelinedWindow shows the client writes a RETR only when fewer
// than depth responses are outstanding: the server stops answering after m
// messages and counts the commands that arrive meanwhile.
func TestRetrPipelinedWindow(t *testing.T) {
	const n, m = 20, 5
	for _, tc := range []struct {
		name  string
		capa  string
		depth int
		want  int // commands received while the client waits for message m+1
	}{
		{"depth 4", "PIPELINING", 4, m + 4},
		{"depth 1", "PIPELINING", 1, m + 1},
		{"no PIPELINING", "UIDL", 8, m + 1},
		{"depth beyond the end", "PIPELINING", 64, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var atStall atomic.Int64
			srv := pop3test.NewServer(t, func(s *pop3test.Session) {
				if !greet(s, tc.capa) {
					return
				}
				var received atomic.Int64
				cmds := make(chan string, 100)
				go func() {
					defer close(cmds)
					for {
						cmd, err := s.ReadCommand()
						if err != nil {
							return
						}
						received.Add(1)
						cmds <- cmd
					}
				}()
				for i := 1; i <= n; i++ {
					cmd := <-cmds
					if cmd != "RETR "+strconv.Itoa(i) {
						s.T.Errorf("command %d is %q", i, cmd)
						return
					}
					if i == m+1 {
						time.Sleep(150 * time.Millisecond) // let any excess command arrive
						atStall.Store(received.Load())
					}
					if s.Send("+OK", fmt.Sprintf("message %d", i), ".") != nil {
						return
					}
				}
				for range cmds {
				}
			})
			c := dialT(t, plainOpts(srv.Addr))
			got := drainQueue(t, c.RetrPipelined(context.Background(), seq(1, n), tc.depth))
			for i, f := range got {
				if f.err != nil || string(f.body) != fmt.Sprintf("message %d\r\n", i+1) {
					t.Fatalf("RETR %d = %q, %v", f.num, f.body, f.err)
				}
			}
			if got := atStall.Load(); got != int64(tc.want) {
				t.Errorf("while message %d was awaited the server had %d commands, want %d", m+1, got, tc.want)
			}
		})
	}
}

// TestRetrPipelinedManyNoDeadlock: thousands of messages through small
// socket buffers and a slow reader at depth 2 and 8. A client that wrote
// ahead without bound would block in Write while the server blocks writing
// responses nobody reads; the deadlines would then fail the transfer.
func TestRetrPipelinedManyNoDeadlock(t *testing.T) {
	const count = 3000
	msgs := make([][]byte, count)
	for i := range msgs {
		msgs[i] = fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 1000+i%3000))
	}
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs,
		Fault: func(s *pop3test.Session, cmd string) bool {
			if cmd == "CAPA" {
				tc := s.Conn.(*net.TCPConn)
				tc.SetReadBuffer(4 << 10)
				tc.SetWriteBuffer(4 << 10)
			}
			return false
		}}
	srv := pop3test.NewServer(t, mb.Serve)
	for _, depth := range []int{2, 8} {
		t.Run(fmt.Sprintf("depth %d", depth), func(t *testing.T) {
			opts := plainOpts(srv.Addr)
			opts.Timeout = 2 * time.Second
			c := dialT(t, opts)
			if err := c.Auth(context.Background(), "u", "p"); err != nil {
				t.Fatal(err)
			}
			q := c.RetrPipelined(context.Background(), seq(1, count), depth)
			for i := 0; ; i++ {
				num, body, err := q.Next(context.Background())
				if err == io.EOF {
					if i != count {
						t.Fatalf("io.EOF after %d messages", i)
					}
					break
				}
				if err != nil {
					t.Fatalf("Next %d: %v", i, err)
				}
				if i == 0 {
					time.Sleep(300 * time.Millisecond) // let every buffer fill
				}
				b, err := io.ReadAll(body)
				if err != nil || !bytes.Equal(b, msgs[num-1]) {
					t.Fatalf("RETR %d: %d bytes, %v", num, len(b), err)
				}
			}
			if err := c.Quit(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRetrPipelinedOwnsConnection(t *testing.T) {
	msgs := [][]byte{bytes.Repeat([]byte("big line\r\n"), 20_000), []byte("two\r\n"), []byte("three\r\n"), []byte("four\r\n")}
	mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs}
	srv := pop3test.NewServer(t, mb.Serve)
	ctx := context.Background()

	t.Run("other commands refused", func(t *testing.T) {
		c := loggedIn(t, mb, srv.Addr)
		q := c.RetrPipelined(ctx, seq(1, 4), 4)
		busy := map[string]func() error{
			"Noop": func() error { return c.Noop(ctx) },
			"Stat": func() error { _, _, err := c.Stat(ctx); return err },
			"List": func() error { _, err := c.ListAll(ctx); return err },
			"Retr": func() error { _, err := c.Retr(ctx, 2); return err },
			"Dele": func() error { return c.Dele(ctx, 2) },
			"Rset": func() error { return c.Rset(ctx) },
			"Quit": func() error { return c.Quit(ctx) },
			"RetrPipelined": func() error {
				_, _, err := c.RetrPipelined(ctx, []int{2}, 1).Next(ctx)
				return err
			},
		}
		for name, f := range busy {
			if err := f(); !errors.Is(err, ErrQueueActive) {
				t.Errorf("%s while the queue is active = %v, want ErrQueueActive", name, err)
			}
		}
		_, body, err := q.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := q.Next(ctx); !errors.Is(err, ErrBodyOpen) {
			t.Errorf("Next with the body open = %v, want ErrBodyOpen", err)
		}
		if err := c.Noop(ctx); !errors.Is(err, ErrBodyOpen) && !errors.Is(err, ErrQueueActive) {
			t.Errorf("Noop with the body open = %v", err)
		}
		if _, err := io.CopyN(io.Discard, body, 100); err != nil {
			t.Fatal(err)
		}
		if err := body.Close(); err != nil {
			t.Fatalf("body Close: %v", err)
		}
		// Close drains the open and the outstanding responses; the
		// session continues in step.
		if err := q.Close(ctx); err != nil {
			t.Fatalf("queue Close: %v", err)
		}
		if _, _, err := q.Next(ctx); !errors.Is(err, ErrQueueClosed) {
			t.Errorf("Next after Close = %v, want ErrQueueClosed", err)
		}
		if got := retrAll(t, c, 4); string(got) != "four\r\n" {
			t.Errorf("RETR 4 after the drained queue = %q", got)
		}
	})

	t.Run("Close with a body half read", func(t *testing.T) {
		c := loggedIn(t, mb, srv.Addr)
		q := c.RetrPipelined(ctx, seq(1, 4), 3)
		_, body, err := q.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, body, 100); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(ctx); err != nil {
			t.Fatalf("queue Close: %v", err)
		}
		if _, err := body.Read(make([]byte, 10)); err == nil {
			t.Errorf("Read of a body after its queue closed succeeded")
		}
		if err := c.Dele(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if got := retrAll(t, c, 2); string(got) != "two\r\n" {
			t.Errorf("RETR 2 after the drained queue = %q", got)
		}
	})

	t.Run("invalid number", func(t *testing.T) {
		c := loggedIn(t, mb, srv.Addr)
		got := drainQueue(t, c.RetrPipelined(ctx, []int{1, 0, 2}, 4))
		if len(got) != 3 {
			t.Fatalf("%d results, want 3", len(got))
		}
		for _, f := range got {
			if f.err == nil || !strings.Contains(f.err.Error(), "RETR 0: invalid message number") {
				t.Errorf("RETR %d = %v, want the invalid number error", f.num, f.err)
			}
		}
		if err := c.Noop(ctx); err != nil {
			t.Errorf("Noop: %v", err)
		}
	})

	t.Run("empty", func(t *testing.T) {
		c := loggedIn(t, mb, srv.Addr)
		if got := drainQueue(t, c.RetrPipelined(ctx, nil, 4)); len(got) != 0 {
			t.Fatalf("got %v", got)
		}
		if err := c.Noop(ctx); err != nil {
			t.Errorf("Noop: %v", err)
		}
	})
}

func TestRetrPipelinedContextAndTimeout(t *testing.T) {
	msgs := [][]byte{[]byte("one\r\n"), []byte("two\r\n"), []byte("three\r\n")}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("ctx done with commands outstanding", func(t *testing.T) {
		mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs}
		srv := pop3test.NewServer(t, mb.Serve)
		c := loggedIn(t, mb, srv.Addr)
		q := c.RetrPipelined(context.Background(), seq(1, 3), 3)
		if _, _, err := q.Next(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want context.Canceled", err)
		}
		for _, want := range []int{2, 3} {
			if num, _, err := q.Next(context.Background()); num != want || !errors.Is(err, context.Canceled) {
				t.Errorf("Next = %d, %v; want %d, context.Canceled", num, err, want)
			}
		}
		if err := c.Noop(context.Background()); !errors.Is(err, context.Canceled) {
			t.Errorf("Noop = %v, want the client broken", err)
		}
	})

	t.Run("ctx done with nothing outstanding", func(t *testing.T) {
		mb := &pop3test.Mailbox{User: "u", Pass: "p", Messages: msgs, Capa: []string{"USER", "UIDL"}}
		srv := pop3test.NewServer(t, mb.Serve)
		c := loggedIn(t, mb, srv.Addr)
		q := c.RetrPipelined(context.Background(), seq(1, 3), 3)
		got := retrQueueBody(t, q)
		if string(got) != "one\r\n" {
			t.Fatalf("first message %q", got)
		}
		if _, _, err := q.Next(cancelled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want context.Canceled", err)
		}
		if num, _, err := q.Next(context.Background()); num != 3 || !errors.Is(err, context.Canceled) {
			t.Errorf("Next = %d, %v; want 3, context.Canceled", num, err)
		}
		if err := c.Noop(context.Background()); err != nil {
			t.Errorf("Noop = %v; nothing was in flight, the client should be usable", err)
		}
	})

	t.Run("stall mid-body", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if greet(s, "PIPELINING") && s.Expect("RETR 1") && s.Expect("RETR 2") {
				s.SendRaw([]byte("+OK\r\nfirst\r\n.\r\n+OK\r\nsecond, then silence"))
				s.Expect("RETR 3")
				s.ReadCommand() // until the client gives up
			}
		})
		opts := plainOpts(srv.Addr)
		opts.Timeout = 200 * time.Millisecond
		c := dialT(t, opts)
		got := drainQueue(t, c.RetrPipelined(context.Background(), seq(1, 3), 2))
		if len(got) != 3 || got[0].err != nil || string(got[0].body) != "first\r\n" {
			t.Fatalf("got %+v", got)
		}
		if string(got[1].body) != "second, then silence" {
			t.Errorf("second body %q", got[1].body)
		}
		for _, f := range got[1:] {
			if !errors.Is(f.err, os.ErrDeadlineExceeded) {
				t.Errorf("RETR %d = %v, want deadline exceeded", f.num, f.err)
			}
		}
	})

	t.Run("Client.Close aborts a waiting Next", func(t *testing.T) {
		srv := pop3test.NewServer(t, func(s *pop3test.Session) {
			if greet(s, "PIPELINING") && s.Expect("RETR 1") {
				io.Copy(io.Discard, s.R) // never answers
			}
		})
		c := dialT(t, plainOpts(srv.Addr))
		q := c.RetrPipelined(context.Background(), seq(1, 2), 4)
		time.AfterFunc(50*time.Millisecond, func() { c.Close() })
		if _, _, err := q.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next = %v, want ErrClosed", err)
		}
		if num, _, err := q.Next(context.Background()); num != 2 || !errors.Is(err, ErrClosed) {
			t.Errorf("Next = %d, %v; want 2, ErrClosed", num, err)
		}
	})
}

func retrQueueBody(t *testing.T, q *RetrQueue) []byte {
	t.Helper()
	_, body, err := q.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRetrPipelinedAnsweredThenClosed: a server that answers the first
// commands in full and closes. The client's later writes fail (the peer
// resets), but the responses already received are still delivered; the
// first message whose command did not go out fails, and every later one.
func TestRetrPipelinedAnsweredThenClosed(t *testing.T) {
	srv := pop3test.NewServer(t, func(s *pop3test.Session) {
		if greet(s, "PIPELINING") && s.Expect("RETR 1") && s.Expect("RETR 2") && s.Expect("RETR 3") {
			s.Send("+OK", "one", ".", "+OK", "two", ".", "+OK", "three", ".")
		}
	})
	c := dialT(t, plainOpts(srv.Addr))
	q := c.RetrPipelined(context.Background(), seq(1, 5), 3)
	var got []fetched
	for {
		time.Sleep(20 * time.Millisecond) // let the server's close and reset arrive
		num, body, err := q.Next(context.Background())
		if err == io.EOF {
			break
		}
		f := fetched{num: num, err: err}
		if err == nil {
			f.body, f.err = io.ReadAll(body)
		}
		got = append(got, f)
	}
	if len(got) != 5 {
		t.Fatalf("got %d messages", len(got))
	}
	for i, want := range []string{"one\r\n", "two\r\n", "three\r\n"} {
		if got[i].err != nil || string(got[i].body) != want {
			t.Errorf("RETR %d = %q, %v; want %q", got[i].num, got[i].body, got[i].err, want)
		}
	}
	for _, f := range got[3:] {
		if f.err == nil || !strings.Contains(f.err.Error(), "RETR "+strconv.Itoa(f.num)) {
			t.Errorf("RETR %d = %v, want an error naming it", f.num, f.err)
		}
	}
	t.Logf("RETR 4: %v", got[3].err)
}
