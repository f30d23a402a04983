package testenv

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One instance with every listener kind: the replies a client meets are
// Postfix's own, and accepted mail lands in the recipient's Maildir.
func TestPostfixRepliesAndDelivery(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	pf := StartPostfix(t, PostfixOptions{
		Recipients:       []string{"sales@corp.example", "Postmaster@corp.example"},
		MessageSizeLimit: 2000,
		TLS:              ca,
		Listeners: []PostfixListener{
			{Name: "tls", RequireTLS: true},
			{Name: "nosize", HideSize: true, MessageSizeLimit: 1000},
			{Name: "other-cert", CertHosts: []string{"mail.other.example"}},
		},
	})

	s := dialSMTP(t, pf.Addr)
	ehlo := s.cmd(250, "EHLO client.test")
	for _, want := range []string{"exchange.corp.example", "SIZE 2000", "STARTTLS", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %q:\n%s", want, ehlo)
		}
	}
	s.cmd(250, "MAIL FROM:<a@supplier.example>")
	if got := s.cmd(554, "RCPT TO:<x@other.example>"); got != "5.7.1 <x@other.example>: Relay access denied" {
		t.Errorf("relay reply %q", got)
	}
	if got := s.cmd(550, "RCPT TO:<nobody@corp.example>"); got != "5.1.1 <nobody@corp.example>: Recipient address rejected: User unknown in virtual mailbox table" {
		t.Errorf("unknown user reply %q", got)
	}
	s.cmd(250, "RCPT TO:<sales@corp.example>")
	s.cmd(354, "DATA")
	msg := []byte("Subject: hello\r\nMessage-ID: <t1@supplier.example>\r\n\r\n.dot line\r\nbody\r\n")
	if _, err := s.c.Write(append(stuff(msg), ".\r\n"...)); err != nil {
		t.Fatal(err)
	}
	s.expect(250)
	if got := s.cmd(552, "MAIL FROM:<a@supplier.example> SIZE=5000"); !strings.HasPrefix(got, "5.3.4 Message size exceeds fixed limit") {
		t.Errorf("SIZE reply %q", got)
	}
	s.cmd(221, "QUIT")

	got := pf.Messages(t, "sales@corp.example")
	if len(got) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(got))
	}
	d := got[0]
	if d.ReturnPath != "a@supplier.example" || !bytes.Contains(d.Data, []byte("Delivered-To: sales@corp.example\n")) {
		t.Errorf("delivered header: %q", firstLines(d.Data, 3))
	}
	if !bytes.Contains(d.Data, []byte("Subject: hello\nMessage-ID: <t1@supplier.example>\n")) || !bytes.HasSuffix(d.Data, []byte("\n\n.dot line\nbody\n")) {
		t.Errorf("delivered message %q", d.Data)
	}
	if n := len(pf.Messages(t, "postmaster@corp.example")); n != 0 {
		t.Errorf("postmaster has %d messages, want 0", n)
	}

	// Require STARTTLS: MAIL before it is refused; after it, verified
	// against the CA, mail goes through.
	s = dialSMTP(t, pf.ListenerAddr(t, "tls"))
	s.cmd(250, "EHLO client.test")
	if got := s.cmd(530, "MAIL FROM:<a@supplier.example>"); got != "5.7.0 Must issue a STARTTLS command first" {
		t.Errorf("require TLS reply %q", got)
	}
	s.cmd(220, "STARTTLS")
	tc := tls.Client(s.c, ca.ClientConfig("localhost"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	tc.Close()

	// Another certificate on its own port: a client expecting localhost
	// fails verification.
	s = dialSMTP(t, pf.ListenerAddr(t, "other-cert"))
	s.cmd(250, "EHLO client.test")
	s.cmd(220, "STARTTLS")
	err := tls.Client(s.c, ca.ClientConfig("localhost")).Handshake()
	if err == nil || !strings.Contains(err.Error(), "mail.other.example") {
		t.Errorf("handshake with the other certificate: %v, want a name mismatch", err)
	}

	// No SIZE advertised: the limit is met at the end of DATA.
	s = dialSMTP(t, pf.ListenerAddr(t, "nosize"))
	if ehlo := s.cmd(250, "EHLO client.test"); strings.Contains(ehlo, "SIZE") {
		t.Errorf("SIZE advertised:\n%s", ehlo)
	}
	s.cmd(250, "MAIL FROM:<a@supplier.example>")
	s.cmd(250, "RCPT TO:<sales@corp.example>")
	s.cmd(354, "DATA")
	big := []byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 70)+"\r\n", 30))
	if _, err := s.c.Write(append(big, ".\r\n"...)); err != nil {
		t.Fatal(err)
	}
	if got := s.expect(552); got != "5.3.4 Error: message file too big" {
		t.Errorf("end of DATA reply %q", got)
	}
	if n := len(pf.Messages(t, "sales@corp.example")); n != 1 {
		t.Errorf("%d messages for sales after the refused one, want 1", n)
	}

	pf.Stop(t)
	if groupHasLive(pf.PID) {
		t.Errorf("postfix process group %d still alive after Stop", pf.PID)
	}
	if _, err := os.Stat(filepath.Join(pf.Dir, "queue", "pid", "master.pid")); err != nil {
		t.Logf("master.pid: %v", err)
	}
}

func firstLines(b []byte, n int) string {
	return strings.Join(strings.SplitN(string(b), "\n", n+1)[:min(n, strings.Count(string(b), "\n"))], "\n")
}

// The stand-in never writes to the system's Postfix: /etc/postfix keeps
// its modification times.
func TestPostfixLeavesSystemConfigAlone(t *testing.T) {
	t.Parallel()
	before := dirTimes(t, "/etc/postfix")
	pf := StartPostfix(t, PostfixOptions{Recipients: []string{"a@corp.example"}})
	pf.Stop(t)
	after := dirTimes(t, "/etc/postfix")
	for name, mt := range before {
		if !after[name].Equal(mt) {
			t.Errorf("%s changed", name)
		}
	}
	if len(after) != len(before) {
		t.Errorf("/etc/postfix had %d entries, now %d", len(before), len(after))
	}
}

func dirTimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out[p] = fi.ModTime()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
