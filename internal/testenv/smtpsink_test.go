package testenv

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"net"
	"net/textproto"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpConn is a raw SMTP client conversation, to control every byte sent.
type smtpConn struct {
	t  *testing.T
	c  net.Conn
	tp *textproto.Conn
}

func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	s := &smtpConn{t: t, c: c, tp: textproto.NewConn(c)}
	s.expect(220)
	return s
}

// expect reads a (multi-line) reply and checks its code.
func (s *smtpConn) expect(code int) string {
	s.t.Helper()
	_, msg, err := s.tp.ReadResponse(code)
	if err != nil {
		s.t.Fatalf("want %d: %v", code, err)
	}
	return msg
}

func (s *smtpConn) cmd(code int, line string) string {
	s.t.Helper()
	if err := s.tp.PrintfLine("%s", line); err != nil {
		s.t.Fatal(err)
	}
	return s.expect(code)
}

// stuff applies SMTP dot-stuffing (RFC 5321 section 4.5.2) to CRLF data.
func stuff(data []byte) []byte {
	lines := bytes.SplitAfter(data, []byte("\r\n"))
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte(".")) {
			lines[i] = append([]byte("."), l...)
		}
	}
	return bytes.Join(lines, nil)
}

func TestSMTPSinkExactData(t *testing.T) {
	t.Parallel()
	sink := StartSMTPSink(t, SMTPSinkOptions{})

	long := strings.Repeat("x", 5000) // beyond the 998 limit: smtp-sink has no line limit in DATA
	tests := []struct {
		name string
		from string
		mail string
		rcpt []string
		data []byte
	}{
		{
			name: "dots, blank lines, trailing spaces, long line",
			from: "sender@example.test",
			mail: "MAIL FROM:<sender@example.test> SIZE=100 BODY=8BITMIME",
			rcpt: []string{"RCPT TO:<one@example.test>", "RCPT TO:<two@example.test> NOTIFY=NEVER"},
			data: []byte("Subject: exact\r\n\r\n.leading dot\r\n..two dots\r\n.\r\ntrail  \r\n\r\n\r\n" + long + "\r\n\x00nul and \xff8bit\r\nend\r\n"),
		},
		{
			name: "null sender, empty message",
			from: "",
			mail: "MAIL FROM:<>",
			rcpt: []string{"RCPT TO:<bounce@example.test>"},
			data: []byte{},
		},
	}
	for _, tc := range tests {
		s := dialSMTP(t, sink.Addr)
		s.cmd(250, "EHLO client.test")
		s.cmd(250, tc.mail)
		for _, r := range tc.rcpt {
			s.cmd(250, r)
		}
		s.cmd(354, "DATA")
		if _, err := s.c.Write(append(stuff(tc.data), ".\r\n"...)); err != nil {
			t.Fatal(err)
		}
		s.expect(250)
		s.cmd(221, "QUIT")
	}

	sink.WaitFor(t, len(tests), 5*time.Second)
	got := sink.Dumps(t)
	if len(got) != len(tests) {
		t.Fatalf("got %d messages, want %d", len(got), len(tests))
	}
	for i, tc := range tests {
		g := got[i]
		if g.From != tc.from {
			t.Errorf("%s: From = %q, want %q", tc.name, g.From, tc.from)
		}
		var wantTo []string
		for _, r := range tc.rcpt {
			wantTo = append(wantTo, pathAddr(strings.TrimPrefix(r, "RCPT TO:")))
		}
		if !reflect.DeepEqual(g.To, wantTo) {
			t.Errorf("%s: To = %q, want %q", tc.name, g.To, wantTo)
		}
		if !bytes.Equal(g.Data, tc.data) {
			t.Errorf("%s: Data =\n%q\nwant\n%q", tc.name, g.Data, tc.data)
		}
		if g.Helo != "client.test" {
			t.Errorf("%s: Helo = %q", tc.name, g.Helo)
		}
		if want := strings.TrimPrefix(tc.mail, "MAIL FROM:"); g.MailArgs != want {
			t.Errorf("%s: MailArgs = %q, want %q", tc.name, g.MailArgs, want)
		}
	}
}

// TestSMTPSinkDocumentedLoss pins down what smtp-sink does to bytes that
// are not CRLF line ends, as documented on Messages.
func TestSMTPSinkDocumentedLoss(t *testing.T) {
	t.Parallel()
	sink := StartSMTPSink(t, SMTPSinkOptions{})
	s := dialSMTP(t, sink.Addr)
	s.cmd(250, "HELO client.test")
	s.cmd(250, "MAIL FROM:<a@example.test>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(354, "DATA")
	s.c.Write([]byte("bare\nlf\r\nbare\rcr\r\n.\r\n"))
	s.expect(250)
	got := sink.WaitFor(t, 1, 5*time.Second)
	if want := "bare\r\nlf\r\nbarecr\r\n"; string(got[0].Data) != want {
		t.Fatalf("Data = %q, want %q (bare LF becomes CRLF, bare CR is lost)", got[0].Data, want)
	}
}

func TestSMTPSinkIncompleteTransactionsAreNotReturned(t *testing.T) {
	t.Parallel()
	sink := StartSMTPSink(t, SMTPSinkOptions{})

	// RSET after MAIL, and a client that hangs up in the middle of DATA:
	// smtp-sink deletes both dumps.
	s := dialSMTP(t, sink.Addr)
	s.cmd(250, "EHLO client.test")
	s.cmd(250, "MAIL FROM:<a@example.test>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(250, "RSET")
	s.cmd(250, "MAIL FROM:<a@example.test>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(354, "DATA")
	s.c.Write([]byte("Subject: partial\r\n\r\nhalf a mess"))

	// While that DATA is open its dump exists but must not be listed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, _ := os.ReadDir(sink.Dir + "/msgs")
		if len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("smtp-sink did not create a dump for the open transaction")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := sink.Messages(t); len(got) != 0 {
		t.Fatalf("open transaction listed: %+v", got)
	}
	s.c.Close()

	// A complete message afterwards is the only one returned.
	s2 := dialSMTP(t, sink.Addr)
	s2.cmd(250, "EHLO client.test")
	s2.cmd(250, "MAIL FROM:<c@example.test>")
	s2.cmd(250, "RCPT TO:<d@example.test>")
	s2.cmd(354, "DATA")
	s2.c.Write([]byte("Subject: whole\r\n\r\nok\r\n.\r\n"))
	s2.expect(250)
	sink.WaitFor(t, 1, 5*time.Second)
	// Give smtp-sink time to process the hang-up, then look again.
	time.Sleep(200 * time.Millisecond)
	got := sink.Messages(t)
	if len(got) != 1 || got[0].From != "c@example.test" {
		t.Fatalf("messages = %+v, want only the complete one", got)
	}
	entries, err := os.ReadDir(sink.Dir + "/msgs")
	if err != nil || len(entries) != 1 {
		t.Fatalf("dump dir holds %d files (err %v), want 1: aborted dumps must be deleted", len(entries), err)
	}
}

func TestSMTPSinkGoSMTPClientOrderAndStop(t *testing.T) {
	t.Parallel()
	sink := StartSMTPSink(t, SMTPSinkOptions{})
	c, err := smtp.Dial(sink.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		msg := "Subject: n" + string(rune('0'+i)) + "\r\n\r\nbody\r\n"
		if err := c.SendMail("a@example.test", []string{"b@example.test"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got := sink.WaitFor(t, 5, 5*time.Second)
	for i, m := range got {
		if want := "Subject: n" + string(rune('0'+i)) + "\r\n\r\nbody\r\n"; string(m.Data) != want {
			t.Errorf("message %d = %q, want %q (order or bytes wrong)", i, m.Data, want)
		}
	}

	pid := sink.PID
	sink.Stop(t)
	sink.Stop(t)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("smtp-sink pid %d alive after Stop: %v", pid, err)
	}
	if n := len(sink.Messages(t)); n != 5 {
		t.Fatalf("after Stop: %d messages, want 5", n)
	}
}

func TestSMTPSinkSTARTTLS(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	sink := StartSMTPSink(t, SMTPSinkOptions{TLS: ca})
	if sink.Addr == sink.SinkAddr {
		t.Fatal("TLS sink must listen through the STARTTLS front")
	}

	plain, err := smtp.Dial(sink.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := plain.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	plain.Close()

	c, err := smtp.DialStartTLS(sink.Addr, ca.ClientConfig("localhost"))
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	// The handshake runs with the first command after STARTTLS (EHLO).
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered again after TLS (RFC 3207 section 4.2)")
	}
	state, ok := c.TLSConnectionState()
	if !ok || !state.HandshakeComplete || len(state.VerifiedChains) == 0 {
		t.Fatalf("TLS state %+v, want a verified handshake", state)
	}
	msg := "Subject: over tls\r\n\r\n.dot\r\nbody\r\n"
	if err := c.SendMail("tls@example.test", []string{"rcpt@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got := sink.WaitFor(t, 1, 5*time.Second)
	if string(got[0].Data) != msg || got[0].From != "tls@example.test" {
		t.Fatalf("got %+v", got[0])
	}

	t.Run("foreign CA fails verification", func(t *testing.T) {
		c, err := smtp.DialStartTLS(sink.Addr, NewCA(t).ClientConfig("localhost"))
		if err == nil {
			defer c.Close()
			err = c.Mail("a@example.test", nil) // runs EHLO, hence the handshake
		}
		var uerr x509.UnknownAuthorityError
		if !errors.As(err, &uerr) {
			t.Fatalf("StartTLS with foreign CA: %v, want unknown authority", err)
		}
	})

	t.Run("pipelining after STARTTLS is refused", func(t *testing.T) {
		s := dialSMTP(t, sink.Addr)
		s.cmd(250, "EHLO client.test")
		s.c.Write([]byte("STARTTLS\r\nMAIL FROM:<injected@example.test>\r\n"))
		s.expect(501)
		if _, err := bufio.NewReader(s.c).ReadByte(); err == nil {
			t.Fatal("connection still open after injected pipelining")
		}
	})

	t.Run("plaintext session without STARTTLS still works", func(t *testing.T) {
		s := dialSMTP(t, sink.Addr)
		s.cmd(250, "EHLO client.test")
		s.cmd(250, "MAIL FROM:<plain@example.test>")
		s.cmd(250, "RCPT TO:<b@example.test>")
		s.cmd(354, "DATA")
		s.c.Write([]byte("STARTTLS\r\n.\r\n"))
		s.expect(250)
		s.cmd(221, "QUIT")
		got := sink.WaitFor(t, 2, 5*time.Second)
		if got[1].From != "plain@example.test" || string(got[1].Data) != "STARTTLS\r\n" {
			t.Fatalf("got %+v", got[1])
		}
	})
}

// TestSMTPSinkRejectedDotKeepsDump pins down a documented smtp-sink quirk:
// with "-f ." (hard-reject the end of DATA) the client gets 500, yet the
// dump is complete and listed. Post-DATA rejections belong in ScriptedSMTP.
func TestSMTPSinkRejectedDotKeepsDump(t *testing.T) {
	t.Parallel()
	sink := StartSMTPSink(t, SMTPSinkOptions{ExtraArgs: []string{"-f", "."}})
	s := dialSMTP(t, sink.Addr)
	s.cmd(250, "EHLO client.test")
	s.cmd(250, "MAIL FROM:<a@example.test>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(354, "DATA")
	s.c.Write([]byte("x\r\n.\r\n"))
	if msg := s.expect(500); !strings.Contains(msg, "5.3.0") {
		t.Fatalf("reply %q", msg)
	}
	if got := sink.Messages(t); len(got) != 1 || string(got[0].Data) != "x\r\n" {
		t.Fatalf("messages %+v, want the rejected one listed", got)
	}
}
