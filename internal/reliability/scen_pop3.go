package reliability

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/testenv"
)

// pop3Fault is one POP3 fault case: a pop3test Mailbox with a Fault hook
// that is armed for the first poll only; later polls must complete.
type pop3Fault struct {
	name string
	// fault is the hook; it fires only while armed is true.
	fault func(r *Rig, armed *atomic.Bool) func(s *pop3test.Session, cmd string) bool
	// setup adjusts the rig or mailbox before the first poll.
	setup func(r *Rig, mb *pop3test.Mailbox)
	// first checks the faulted poll.
	first func(t T, r *Rig, res connector.Result)
	// refuse: the fault is permanent; the first poll's error must explain
	// why nothing moved and the case does not complete.
	refuse bool
}

// POP3FaultCases are scenario 3: faults of the POP3 server.
func POP3FaultCases() []Case {
	faults := []pop3Fault{
		{
			name: "drop-mid-retr",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if cmd != "RETR 3" || !armed.CompareAndSwap(true, false) {
						return false
					}
					wire := pop3test.DotStuff(r.Boxes[0].mb.Messages[2])
					s.Send("+OK message follows")
					s.SendRaw(wire[:len(wire)/2])
					s.Conn.Close()
					return true
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				wantErr(t, res, "RETR")
				// The cut message left no archived object and no record.
				for _, rec := range ledgerRecords(t, r) {
					if rec.UIDL == pop3test.UID(2) {
						t.Errorf("a record exists for the message whose RETR was cut: %+v", rec)
					}
				}
				if n := countFiles(t, r.ArchiveDir); n != 2 {
					t.Errorf("%d archived objects after RETR 3 was cut, want 2", n)
				}
			},
		},
		{
			name: "dele-err",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if cmd == "DELE 2" && armed.Load() {
						s.Send("-ERR [SYS/TEMP] cannot mark message 2")
						return true
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				wantErr(t, res, "DELE")
				if !r.OnServer()["seq-2"] {
					t.Errorf("the message whose DELE failed is gone")
				}
			},
		},
		{
			name: "drop-after-dele-before-quit-reply",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				deleSeen := false
				return func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "DELE") {
						deleSeen = true
					}
					if cmd == "QUIT" && deleSeen && armed.CompareAndSwap(true, false) {
						s.Conn.Close() // hang up without UPDATE: nothing deleted
						return true
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				wantErr(t, res, "QUIT")
				if n := len(r.OnServer()); n != 5 {
					t.Errorf("%d messages on the server after a QUIT without reply, want all 5", n)
				}
			},
		},
		{
			name: "quit-commits-then-drops",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				deleSeen := false
				return func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "DELE") {
						deleSeen = true
					}
					if cmd == "QUIT" && deleSeen && armed.CompareAndSwap(true, false) {
						// The server enters UPDATE and deletes, but the
						// +OK never reaches the client.
						s.Conn = deafConn{s.Conn}
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				wantErr(t, res, "QUIT")
				if n := len(r.OnServer()); n != 0 {
					t.Errorf("%d messages on the server, want 0 (the server committed)", n)
				}
			},
		},
		{
			name: "quit-err",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if cmd == "QUIT" && armed.Load() {
						s.Send("-ERR [SYS/TEMP] could not update the maildrop")
						s.Conn.Close()
						return true
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				wantErr(t, res, "could not update")
				if n := len(r.OnServer()); n != 5 {
					t.Errorf("%d messages on the server after QUIT -ERR, want 5", n)
				}
			},
		},
		{
			name: "no-uidl",
			setup: func(r *Rig, mb *pop3test.Mailbox) {
				mb.SetCapa([]string{"USER", "RESP-CODES", "PIPELINING"})
			},
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "UIDL") {
						s.Send("-ERR unknown command")
						return true
					}
					return false
				}
			},
			refuse: true,
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrNoUIDL) {
					t.Errorf("poll of a server without UIDL: err = %v, want one wrapping pop3.ErrNoUIDL", res.Err)
				}
				wantErr(t, res, "UIDL")
				if n := countFiles(t, r.ArchiveDir); n != 0 {
					t.Errorf("%d messages archived from a server without UIDL", n)
				}
			},
		},
		{
			name: "login-in-use",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "PASS ") && armed.Load() {
						s.Send("-ERR [IN-USE] maildrop already locked")
						return true
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				var pe *pop3.Error
				if !errors.As(res.Err, &pe) || pe.Code != "IN-USE" || !pe.Temporary() || errors.Is(res.Err, pop3.ErrAuth) {
					t.Errorf("[IN-USE] at login: err = %v, want a temporary *pop3.Error with code IN-USE, not ErrAuth", res.Err)
				}
			},
		},
		{
			name: "login-auth",
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if strings.HasPrefix(cmd, "PASS ") && armed.Load() {
						s.Send("-ERR [AUTH] invalid user name or password")
						return true
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				var pe *pop3.Error
				if !errors.Is(res.Err, pop3.ErrAuth) || !errors.As(res.Err, &pe) || pe.Temporary() {
					t.Errorf("[AUTH] at login: err = %v, want a permanent error matching pop3.ErrAuth", res.Err)
				}
			},
		},
		{
			name: "slower-than-timeout",
			setup: func(r *Rig, mb *pop3test.Mailbox) {
				r.PopOpts.Timeout = time.Second
			},
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if cmd == "RETR 2" && armed.CompareAndSwap(true, false) {
						time.Sleep(2500 * time.Millisecond) // then answer, too late
					}
					return false
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				var ne net.Error
				if res.Err == nil || !(errors.As(res.Err, &ne) && ne.Timeout()) && !strings.Contains(res.Err.Error(), "timeout") {
					t.Errorf("stalled RETR: err = %v, want a timeout", res.Err)
				}
			},
		},
		{
			name: "slow-but-progressing",
			setup: func(r *Rig, mb *pop3test.Mailbox) {
				r.PopOpts.Timeout = 1500 * time.Millisecond
			},
			fault: func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
				return func(s *pop3test.Session, cmd string) bool {
					if cmd != "RETR 2" || !armed.Load() {
						return false
					}
					// 8 pieces 300 ms apart: 2.4 s in all, never 1.5 s silent.
					wire := pop3test.DotStuff(r.Boxes[0].mb.Messages[1])
					s.Send("+OK trickling")
					step := len(wire)/8 + 1
					for i := 0; i < len(wire); i += step {
						time.Sleep(300 * time.Millisecond)
						s.SendRaw(wire[i:min(i+step, len(wire))])
					}
					return true
				}
			},
			first: func(t T, r *Rig, res connector.Result) {
				if res.Err != nil {
					t.Errorf("a slow RETR that keeps sending failed: %v", res.Err)
				}
			},
		},
		{
			name:  "garbage-status-line",
			fault: answerOnce("LIST", "this is not a POP3 status line"),
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrProtocol) {
					t.Errorf("garbage status: err = %v, want pop3.ErrProtocol", res.Err)
				}
			},
		},
		{
			name:  "garbage-listing-line",
			fault: answerOnce("LIST", "+OK", "1 not-a-size", "."),
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrProtocol) {
					t.Errorf("garbage listing: err = %v, want pop3.ErrProtocol", res.Err)
				}
			},
		},
		{
			name:  "overlong-status-line",
			fault: answerOnce("RETR 1", "+OK "+strings.Repeat("x", 100_000)),
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrProtocol) {
					t.Errorf("over-long status line: err = %v, want pop3.ErrProtocol", res.Err)
				}
			},
		},
		{
			name:  "overlong-uidl-line",
			fault: answerOnce("UIDL", "+OK", "1 "+strings.Repeat("u", 20_000), "."),
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrProtocol) {
					t.Errorf("over-long UIDL line: err = %v, want pop3.ErrProtocol", res.Err)
				}
			},
		},
		{
			name:  "uidl-with-control-chars",
			fault: answerOnce("UIDL", "+OK", "1 uid\x01../../x", "2 uid-1", "3 uid-2", "4 uid-3", "5 uid-4", "."),
			first: func(t T, r *Rig, res connector.Result) {
				if !errors.Is(res.Err, pop3.ErrProtocol) {
					t.Errorf("UIDL with a control character: err = %v, want pop3.ErrProtocol", res.Err)
				}
			},
		},
	}
	var cases []Case
	for _, f := range faults {
		cases = append(cases, Case{Name: "pop3/" + f.name, Run: func(t T, o *Options) Row { return runPOP3Fault(t, o, f) }})
	}
	cases = append(cases,
		Case{Name: "pop3/uidl-reused-after-delete", Run: runUIDLReused},
		Case{Name: "pop3/uidl-reused-before-sweep", Run: runUIDLReusedUnswept},
	)
	return cases
}

// answerOnce answers the first cmd (while armed) with lines.
func answerOnce(cmd string, lines ...string) func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
	return func(r *Rig, armed *atomic.Bool) func(*pop3test.Session, string) bool {
		return func(s *pop3test.Session, c string) bool {
			if c != cmd || !armed.CompareAndSwap(true, false) {
				return false
			}
			s.Send(lines...)
			if strings.HasPrefix(lines[0], "+OK ") && len(lines[0]) > 4096 {
				s.Conn.Close()
			}
			return true
		}
	}
}

// deafConn swallows everything written to it: the server's answer is lost.
type deafConn struct{ net.Conn }

func (d deafConn) Write(p []byte) (int, error) { return len(p), nil }

func runPOP3Fault(t T, o *Options, f pop3Fault) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	var armed atomic.Bool
	armed.Store(true)
	ids, msgs := SeqMessages(1, 5)
	var hook func(*pop3test.Session, string) bool
	if f.fault != nil {
		hook = f.fault(r, &armed)
	}
	mb := r.ServePOP3(ids, msgs, hook)
	if f.setup != nil {
		f.setup(r, mb)
	}
	res := r.Poll()
	t.Logf("faulted poll: err=%v delivered=%d deleted=%d", res.Err, res.Delivered, res.Deleted)
	armed.Store(false)
	if f.first != nil {
		f.first(t, r, res)
	}
	row := Row{}
	if f.refuse {
		r.Refusal = res.Err
		if len(r.SMTP.Messages()) != 0 {
			t.Errorf("mail was relayed although the poll was refused")
		}
		row = r.Row("pop3/"+f.name, 0)
	} else {
		r.PollUntilDone(5)
		if !r.Done() {
			t.Errorf("not done after the fault was removed: last error %v", r.lastErr())
		}
		row = r.Row("pop3/"+f.name, 0)
	}
	if res.Err != nil {
		row.Notes = append(row.Notes, "faulted poll: "+res.Err.Error())
	}
	return row
}

// runUIDLReused: two messages are delivered and deleted; a new session
// then serves two different messages under the same UIDLs (a server that
// reuses UIDLs, which RFC 1939 §7 forbids but some do after a mailbox is
// rebuilt). They must be delivered, not taken for the old ones.
func runUIDLReused(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	ids, msgs := SeqMessages(1, 2)
	r.ServePOP3(ids, msgs, nil)
	r.PollUntilDone(3)
	if !r.Done() {
		t.Fatalf("first two messages not delivered: %v", r.lastErr())
	}
	r.Snapshot()
	ids, msgs = SeqMessages(101, 2)
	r.ServePOP3(ids, msgs, nil) // UIDs uid-0 and uid-1 again
	r.Clock.Advance(time.Hour)
	r.PollUntilDone(3)
	row := r.Row("pop3/uidl-reused-after-delete", 0)
	if got := len(r.SMTP.Messages()); got != 4 {
		t.Errorf("BUG: %d messages relayed, want 4: the messages under reused UIDLs were %s", got, fate(row))
	}
	return row
}

// runUIDLReusedUnswept: a message is delivered, DELE'd, and the server
// commits the deletion but the +OK to QUIT is lost, so the ledger still
// says "delivered, not deleted". The next session serves a different
// message under the same UIDL (and a different size).
func runUIDLReusedUnswept(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	var armed atomic.Bool
	armed.Store(true)
	ids, msgs := SeqMessages(1, 1)
	r.ServePOP3(ids, msgs, func(s *pop3test.Session, cmd string) bool {
		if cmd == "QUIT" && armed.CompareAndSwap(true, false) {
			s.Conn = deafConn{s.Conn}
		}
		return false
	})
	res := r.Poll()
	if res.Delivered != 1 || len(r.OnServer()) != 0 {
		t.Fatalf("setup: delivered=%d on server=%d err=%v", res.Delivered, len(r.OnServer()), res.Err)
	}
	r.Snapshot()
	ids, msgs = SeqMessages(201, 1)
	r.ServePOP3(ids, msgs, nil) // uid-0 again, other bytes and size
	r.Clock.Advance(time.Hour)
	r.PollUntilDone(3)
	row := r.Row("pop3/uidl-reused-before-sweep", 0)
	if got := len(r.SMTP.Messages()); got != 2 {
		t.Errorf("BUG: %d messages relayed, want 2: the message under the reused UIDL was %s", got, fate(row))
	}
	return row
}

// fate summarises what happened to undelivered messages, for messages.
func fate(row Row) string {
	if row.DeletedUndelivered > 0 {
		return fmt.Sprintf("deleted from the server without delivery (%d)", row.DeletedUndelivered)
	}
	return fmt.Sprintf("not delivered (lost %d, waiting %d)", row.Lost, row.Waiting)
}

// wantErr reports unless the poll failed with an error mentioning want.
func wantErr(t T, res connector.Result, want string) {
	t.Helper()
	if res.Err == nil {
		t.Errorf("poll succeeded, want an error mentioning %q", want)
		return
	}
	if !strings.Contains(res.Err.Error(), want) {
		t.Errorf("poll error %q does not mention %q", res.Err, want)
	}
}
