package testenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pop3Conn is a minimal RFC 1939 client over net/textproto, enough to check
// what Dovecot really sends.
type pop3Conn struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialPOP3(t *testing.T, c net.Conn) *pop3Conn {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	p := &pop3Conn{t: t, conn: c, tp: textproto.NewConn(c)}
	t.Cleanup(func() { c.Close() })
	if line := p.line(); !strings.HasPrefix(line, "+OK") {
		t.Fatalf("greeting %q", line)
	}
	return p
}

func (p *pop3Conn) line() string {
	p.t.Helper()
	l, err := p.tp.ReadLine()
	if err != nil {
		p.t.Fatalf("pop3 read: %v", err)
	}
	return l
}

// cmd sends a command and returns the status line.
func (p *pop3Conn) cmd(format string, args ...any) string {
	p.t.Helper()
	if err := p.tp.PrintfLine(format, args...); err != nil {
		p.t.Fatalf("pop3 write: %v", err)
	}
	return p.line()
}

// ok sends a command that must succeed.
func (p *pop3Conn) ok(format string, args ...any) string {
	p.t.Helper()
	l := p.cmd(format, args...)
	if !strings.HasPrefix(l, "+OK") {
		p.t.Fatalf("%s: %q", strings.Fields(format)[0], l)
	}
	return l
}

// multi sends a command with a multi-line answer and returns the raw body
// bytes as sent (still dot-stuffed, CRLF kept), without the final ".\r\n".
func (p *pop3Conn) multi(format string, args ...any) []byte {
	p.t.Helper()
	p.ok(format, args...)
	var body []byte
	for {
		l, err := p.tp.R.ReadSlice('\n')
		if err != nil {
			p.t.Fatalf("pop3 multi-line read: %v", err)
		}
		if string(l) == ".\r\n" {
			return body
		}
		body = append(body, l...)
	}
}

func (p *pop3Conn) login(user, pass string) {
	p.t.Helper()
	p.ok("USER %s", user)
	p.ok("PASS %s", pass)
}

// unstuff removes POP3 byte-stuffing (RFC 1939 section 3).
func unstuff(b []byte) []byte {
	lines := bytes.SplitAfter(b, []byte("\r\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimPrefix(l, []byte("."))
	}
	return bytes.Join(lines, nil)
}

func TestDovecotRetrieveUIDLAndDelete(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{Users: map[string]string{"alice": "alice-pw", "bob": "bob-pw"}})

	lfMsg := []byte("From: a@example.test\nSubject: lf\n\n.leading dot\nbody\n")
	crlfMsg := []byte("From: a@example.test\r\nSubject: crlf\r\n\r\n..two dots\r\nbody\r\n")
	noEOL := []byte("Subject: no final newline\r\n\r\nlast line")
	n1 := d.Deliver(t, "alice", lfMsg)
	n2 := d.Deliver(t, "alice", crlfMsg)
	n3 := d.Deliver(t, "alice", noEOL)
	if !(n1 < n2 && n2 < n3) {
		t.Fatalf("Deliver names not in delivery order: %q %q %q", n1, n2, n3)
	}
	if got := d.Count(t, "alice"); got != 3 {
		t.Fatalf("Count(alice) = %d, want 3", got)
	}
	if got := d.Count(t, "bob"); got != 0 {
		t.Fatalf("Count(bob) = %d, want 0", got)
	}
	stored := d.Messages(t, "alice")
	for i, want := range [][]byte{lfMsg, crlfMsg, noEOL} {
		if !bytes.Equal(stored[i], want) {
			t.Errorf("Messages[%d] = %q, want %q as delivered", i, stored[i], want)
		}
	}

	c, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p := dialPOP3(t, c)
	p.login("alice", "alice-pw")
	if l := p.ok("STAT"); !strings.HasPrefix(l, "+OK 3 ") {
		t.Fatalf("STAT = %q", l)
	}

	uidl := string(p.multi("UIDL"))
	wantUIDL := fmt.Sprintf("1 %s\r\n2 %s\r\n3 %s\r\n", n1, n2, n3)
	if uidl != wantUIDL {
		t.Fatalf("UIDL =\n%q\nwant\n%q", uidl, wantUIDL)
	}

	// LIST sizes count CRLF line ends.
	list := string(p.multi("LIST"))
	wantList := fmt.Sprintf("1 %d\r\n2 %d\r\n3 %d\r\n", len(lfMsg)+bytes.Count(lfMsg, []byte("\n")), len(crlfMsg), len(noEOL))
	if list != wantList {
		t.Errorf("LIST = %q, want %q", list, wantList)
	}

	tests := []struct {
		n    int
		want []byte
	}{
		{1, bytes.ReplaceAll(lfMsg, []byte("\n"), []byte("\r\n"))},
		{2, crlfMsg},
		{3, append(append([]byte{}, noEOL...), "\r\n"...)},
	}
	for _, tc := range tests {
		got := unstuff(p.multi("RETR %d", tc.n))
		if !bytes.Equal(got, tc.want) {
			t.Errorf("RETR %d = %q, want %q", tc.n, got, tc.want)
		}
	}

	p.ok("DELE 2")
	// A DELE only takes effect at QUIT (RFC 1939 section 6).
	if got := d.Count(t, "alice"); got != 3 {
		t.Fatalf("Count before QUIT = %d, want 3", got)
	}
	p.ok("QUIT")
	files := d.Files(t, "alice")
	if len(files) != 2 || files[0].Name != n1 || files[1].Name != n3 {
		t.Fatalf("after DELE 2 + QUIT: files %+v, want %s and %s", files, n1, n3)
	}

	// Deliver while Dovecot runs, then a new session sees the message with
	// the same UIDLs as before for the old ones.
	n4 := d.Deliver(t, "alice", []byte("Subject: late\n\nx\n"))
	c2, err := tls.Dial("tcp", d.TLSAddr, d.CA.ClientConfig("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	p2 := dialPOP3(t, c2)
	p2.login("alice", "alice-pw")
	uidl = string(p2.multi("UIDL"))
	wantUIDL = fmt.Sprintf("1 %s\r\n2 %s\r\n3 %s\r\n", n1, n3, n4)
	if uidl != wantUIDL {
		t.Fatalf("second session UIDL = %q, want %q", uidl, wantUIDL)
	}
	p2.ok("QUIT")
}

func TestDovecotTLS(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	d := StartDovecot(t, DovecotOptions{Users: map[string]string{"carol": "c-pw"}, MailboxCert: ca})
	if d.CA != ca {
		t.Fatal("Dovecot.CA is not the CA passed in MailboxCert")
	}

	t.Run("STLS", func(t *testing.T) {
		c, err := net.Dial("tcp", d.Addr)
		if err != nil {
			t.Fatal(err)
		}
		p := dialPOP3(t, c)
		capa := string(p.multi("CAPA"))
		if !strings.Contains(capa, "STLS\r\n") {
			t.Fatalf("CAPA lacks STLS: %q", capa)
		}
		p.ok("STLS")
		tc := tls.Client(c, d.CA.ClientConfig("localhost"))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("STLS handshake: %v", err)
		}
		p = &pop3Conn{t: t, conn: tc, tp: textproto.NewConn(tc)}
		p.login("carol", "c-pw")
		p.ok("STAT")
		p.ok("QUIT")
	})

	for _, name := range []string{"localhost", "127.0.0.1"} {
		t.Run("pop3s verified as "+name, func(t *testing.T) {
			c, err := tls.Dial("tcp", d.TLSAddr, d.CA.ClientConfig(name))
			if err != nil {
				t.Fatalf("pop3s: %v", err)
			}
			p := dialPOP3(t, c)
			p.login("carol", "c-pw")
			p.ok("QUIT")
		})
	}

	t.Run("other CA is rejected", func(t *testing.T) {
		other := NewCA(t)
		_, err := tls.Dial("tcp", d.TLSAddr, other.ClientConfig("localhost"))
		var uerr x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &uerr) {
			t.Fatalf("pop3s with a foreign CA: err = %v, want unknown authority", err)
		}
	})

	t.Run("bad password", func(t *testing.T) {
		c, err := net.Dial("tcp", d.Addr)
		if err != nil {
			t.Fatal(err)
		}
		p := dialPOP3(t, c)
		p.ok("USER carol")
		if l := p.cmd("PASS wrong"); !strings.HasPrefix(l, "-ERR") {
			t.Fatalf("PASS wrong = %q, want -ERR", l)
		}
	})
}

func TestDovecotExtraConfAndStop(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{
		Users: map[string]string{"dave": "d-pw"},
		// Later settings win: back to Dovecot's default UIDL format.
		ExtraConf: "pop3_uidl_format = %08Xu%08Xv",
	})
	name := d.Deliver(t, "dave", []byte("Subject: s\r\n\r\nb\r\n"))
	c, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p := dialPOP3(t, c)
	p.login("dave", "d-pw")
	l := p.ok("UIDL 1")
	uid := strings.Fields(l)[2]
	if uid == name || len(uid) != 16 {
		t.Fatalf("UIDL with ExtraConf override = %q, want 16 hex digits (not %q)", uid, name)
	}
	p.ok("QUIT")

	pid := d.PID
	d.Stop(t)
	d.Stop(t) // idempotent
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("dovecot pid %d still exists after Stop: %v", pid, err)
	}
	if groupHasLive(pid) {
		t.Fatalf("dovecot process group %d still has live members after Stop", pid)
	}
	if c, err := net.DialTimeout("tcp", d.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", d.Addr)
	}
	// The maildir stays readable after Stop.
	if got := d.Count(t, "dave"); got != 1 {
		t.Fatalf("Count after Stop = %d, want 1", got)
	}
}

func TestDovecotRejectsBadUser(t *testing.T) {
	// Names that would corrupt the passwd-file are refused before anything
	// starts.
	for _, users := range []map[string]string{
		{"a:b": "pw"},
		{"ok": "pw:with:colons"},
		{"../x": "pw"},
	} {
		r := &outcomeRecorder{TB: t}
		r.run(func(tb testing.TB) { StartDovecot(tb, DovecotOptions{Users: users}) })
		if r.skipped {
			t.Skip(r.msg)
		}
		if !r.failed || !strings.Contains(r.msg, "Dovecot user") {
			t.Errorf("StartDovecot(%v): failed=%v msg=%q, want a refusal", users, r.failed, r.msg)
		}
	}
}
