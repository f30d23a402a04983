package relay_test

// Tests against the scripted in-process server of internal/testenv, for the
// faults and extensions smtp-sink cannot stage: per-recipient replies, AUTH,
// SIZE limits, hang-ups, exact bytes (smtp-sink drops CRs).

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

func TestScriptedPerRecipientOutcomes(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnRcpt: func(to string) error {
			if to == "full@example.net" {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy, try later"}
			}
			return nil
		},
	})
	c := mustDial(t, srv.Addr, nil)
	to := []string{"one@example.net", "full@example.net", "three@example.net"}
	msg := crlf("Subject: three\n\nhello\n")
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader(msg))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(out) != 3 {
		t.Fatalf("%d outcomes, want 3", len(out))
	}
	for i, o := range out {
		if o.Address != to[i] {
			t.Errorf("outcome %d is for %q, want %q", i, o.Address, to[i])
		}
	}
	if out[0].Err != nil || out[2].Err != nil || out[0].Reply == "" {
		t.Errorf("accepted recipients: %+v / %+v", out[0], out[2])
	}
	e := out[1].Err
	if e == nil || e.Op != "rcpt" || e.Code != 450 || e.Enhanced != "4.2.1" || !e.Temporary || !strings.Contains(e.Message, "Mailbox busy") {
		t.Errorf("refused recipient: %+v, want temporary rcpt 450 4.2.1", e)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "one@example.net,three@example.net" || string(msgs[0].Data) != msg {
		t.Errorf("server received %+v", msgs)
	}
}

func TestScriptedBareLineEndings(t *testing.T) {
	// The scripted server keeps the bytes as received (smtp-sink drops every
	// CR, Postfix rewrites bare CRs), so this pins down the documented
	// line-ending handling, on each of the three paths. (A final bare CR is
	// left out: go-smtp's server misses the terminator after "a\r\r\n";
	// dotstuff_test.go and chunk_test.go pin those bytes down.)
	cases := []struct{ name, in, want string }{
		{"crlf unchanged", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare LF becomes CRLF", "a\nb\n", "a\r\nb\r\n"},
		{"bare CR kept", "a\rb\r\n", "a\rb\r\n"},
		{"CR CR LF kept", "a\r\r\nb", "a\r\r\nb\r\n"},
		{"final line break added", "a\r\nno end", "a\r\nno end\r\n"},
		{"dots after bare LF stuffed", "x\n.y\n", "x\r\n.y\r\n"},
		{"empty", "", "\r\n"},
	}
	for _, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{})
			c := mustDial(t, srv.Addr, p.mutate)
			if c.Pipelining() != p.mode {
				t.Fatalf("Pipelining() = %q, want %q", c.Pipelining(), p.mode)
			}
			for _, tc := range cases {
				out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader(tc.in))
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				accepted(t, out, 1)
			}
			msgs := srv.Messages()
			if len(msgs) != len(cases) {
				t.Fatalf("%d messages, want %d", len(msgs), len(cases))
			}
			for i, tc := range cases {
				if string(msgs[i].Data) != tc.want {
					t.Errorf("%s: server got %q, want %q", tc.name, msgs[i].Data, tc.want)
				}
			}
		})
	}
}

func TestScriptedAuthPlain(t *testing.T) {
	const password = "s3cret-Pa55word!"
	ca := testenv.NewCA(t)
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{TLS: ca, AuthUsers: map[string]string{"relay-user": password}})
	tlsCfg := &tls.Config{RootCAs: ca.Pool}

	t.Run("ok", func(t *testing.T) {
		log, logs := debugLogger()
		c := mustDial(t, srv.Addr, func(o *relay.Options) {
			o.TLS, o.TLSConfig, o.Logger = tlsmode.StartTLS, tlsCfg, log
			o.Auth = &relay.AuthConfig{Mechanism: "plain", Username: "relay-user", Password: password}
		})
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("Subject: auth\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		accepted(t, out, 1)
		if m := srv.Transactions(); len(m) != 1 || m[0].AuthUser != "relay-user" || !m[0].TLS {
			t.Errorf("server transactions %+v, want one sent as relay-user over TLS", m)
		}
		transcript := logs.String()
		assertNoSecret(t, transcript, "relay-user", password)
		if !strings.Contains(transcript, "AUTH PLAIN [redacted]") {
			t.Errorf("transcript does not show the redacted AUTH command:\n%s", transcript)
		}
	})

	t.Run("bad password", func(t *testing.T) {
		log, logs := debugLogger()
		_, err := dial(t, srv.Addr, func(o *relay.Options) {
			o.TLS, o.TLSConfig, o.Logger = tlsmode.StartTLS, tlsCfg, log
			o.Auth = &relay.AuthConfig{Username: "relay-user", Password: "wrong-" + password}
		})
		if err == nil {
			t.Fatal("Dial succeeded with a wrong password")
		}
		e := asRelayError(t, err)
		if e.Op != "auth" || e.Code != 535 || e.Temporary {
			t.Errorf("err = %v, want permanent auth 535", e)
		}
		assertNoSecret(t, err.Error()+"\n"+logs.String(), "relay-user", "wrong-"+password)
	})

	t.Run("refused without TLS", func(t *testing.T) {
		plain := testenv.StartScriptedSMTP(t, testenv.SMTPScript{AuthUsers: map[string]string{"relay-user": password}})
		log, logs := debugLogger()
		_, err := dial(t, plain.Addr, func(o *relay.Options) {
			o.Logger = log
			o.Auth = &relay.AuthConfig{Username: "relay-user", Password: password}
		})
		if err == nil || asRelayError(t, err).Op != "auth" {
			t.Fatalf("Dial = %v, want an auth refusal", err)
		}
		if strings.Contains(logs.String(), "AUTH") && strings.Contains(logs.String(), "dir=C line=\"AUTH") {
			t.Errorf("credentials were sent without TLS:\n%s", logs.String())
		}
	})
}

// assertNoSecret fails if text holds the password in clear or in any of the
// base64 forms AUTH PLAIN/LOGIN put on the wire.
func assertNoSecret(t *testing.T, text, user, password string) {
	t.Helper()
	for _, s := range secretForms(user, password) {
		if strings.Contains(text, s) {
			t.Errorf("secret form %q found in:\n%s", s, text)
		}
	}
}

func TestScriptedSizeLimitRefusedLocally(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{MaxMessageBytes: 1000})
	log, logs := debugLogger()
	c := mustDial(t, srv.Addr, func(o *relay.Options) { o.Logger = log })
	if c.MaxSize() != 1000 {
		t.Fatalf("MaxSize = %d, want 1000 (extensions %v)", c.MaxSize(), c.Extensions())
	}
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 25) // 2,000 bytes
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net", "c@example.net"}, Size: 2000}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for _, o := range out {
		if o.Err == nil || o.Err.Code != 552 || o.Err.Enhanced != "5.3.4" || o.Err.Temporary || !o.Err.Local {
			t.Errorf("%s: %+v, want local permanent 552 5.3.4", o.Address, o.Err)
		}
	}
	if tr := logs.String(); strings.Contains(tr, "MAIL FROM") || strings.Contains(tr, "DATA") {
		t.Errorf("a transaction was started for an oversized message:\n%s", tr)
	}
	// A message that fits declares its size and goes through.
	small := "Subject: small\r\n\r\nfits\r\n"
	out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, Size: int64(len(small))}, strings.NewReader(small))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	if !strings.Contains(logs.String(), "SIZE="+itoa(len(small))) {
		t.Errorf("SIZE= not declared to a server advertising SIZE:\n%s", logs.String())
	}
	// A size the envelope underestimated is refused by the server at DATA.
	out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, Size: 10}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if e := out[0].Err; e == nil || e.Op != "data" || e.Code != 552 || e.Temporary || e.Local {
		t.Errorf("underestimated size: %+v, want the server's permanent 552 at data", e)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("server stored %d messages, want 1", n)
	}
}

func TestScriptedSMTPUTF8NotAdvertised(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{})
	log, logs := debugLogger()
	c := mustDial(t, srv.Addr, func(o *relay.Options) { o.Logger = log })
	cases := []struct {
		env  relay.Envelope
		code int
		enh  string
	}{
		{relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, NeedsSMTPUTF8: true}, 554, "5.6.9"},
		{relay.Envelope{From: "a@example.org", To: []string{"b@example.net", "jörg@example.de"}}, 553, "5.6.7"},
	}
	for _, tc := range cases {
		out, err := c.Send(testContext(t), tc.env, strings.NewReader("Subject: ü\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		for _, o := range out {
			if o.Err == nil || o.Err.Temporary || o.Err.Code != tc.code || o.Err.Enhanced != tc.enh || !strings.Contains(o.Err.Message, "SMTPUTF8") {
				t.Errorf("%s: %+v, want permanent %d %s about SMTPUTF8", o.Address, o.Err, tc.code, tc.enh)
			}
		}
	}
	if strings.Contains(logs.String(), "MAIL FROM") {
		t.Errorf("MAIL sent although SMTPUTF8 is missing:\n%s", logs.String())
	}
}

func TestScriptedMailRefusedThenConnectionReused(t *testing.T) {
	refuse := true
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnMail: func(string) error {
			if refuse {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem"}
			}
			return nil
		},
	})
	c := mustDial(t, srv.Addr, nil)
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net", "c@example.net"}}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for _, o := range out {
		if o.Err == nil || o.Err.Op != "mail" || o.Err.Code != 451 || !o.Err.Temporary {
			t.Errorf("%s: %+v, want temporary mail 451", o.Address, o.Err)
		}
	}
	refuse = false
	out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatalf("second Send: %v", err)
	}
	accepted(t, out, 1)
}

func TestScriptedFiveMessagesOneSession(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnRcpt: func(to string) error {
			if strings.HasPrefix(to, "reject") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		},
	})
	c := mustDial(t, srv.Addr, nil)
	for i := 0; i < 5; i++ {
		to := []string{"user" + itoa(i) + "@example.net"}
		if i == 2 {
			// A transaction with no accepted recipient in the middle must not
			// disturb the next one (RSET).
			to = []string{"reject@example.net"}
		}
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("Subject: "+itoa(i)+"\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if i != 2 {
			accepted(t, out, 1)
		}
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("server saw %d sessions, want 1", n)
	}
	if n := len(srv.Messages()); n != 4 {
		t.Errorf("server stored %d messages, want 4", n)
	}
}

func TestScriptedHangUpAfterDot(t *testing.T) {
	// The server drops the connection between "." and its reply: the outcome
	// is unknown, so temporary, and the connection is gone.
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnData: func(string, []string, []byte) error { return testenv.ErrDropConnection },
	})
	c := mustDial(t, srv.Addr, nil)
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net", "c@example.net"}}, strings.NewReader("x\r\n"))
	if err == nil {
		t.Fatal("no error after the server hung up")
	}
	if e := asRelayError(t, err); e.Op != "data" || !e.Temporary {
		t.Errorf("err = %v, want temporary data error", e)
	}
	for _, o := range out {
		if o.Err == nil || !o.Err.Temporary {
			t.Errorf("%s: %+v, want temporary", o.Address, o.Err)
		}
	}
}

// failingReader yields n bytes of a valid message, then fails.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
		if i%70 == 69 {
			p[i] = '\n'
		}
	}
	f.n -= k
	return k, nil
}

func TestScriptedBodyFailureNeverEndsData(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{})
	c := mustDial(t, srv.Addr, nil)
	archiveErr := errors.New("archive: read failed")
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, &failingReader{n: 100 << 10, err: archiveErr})
	if err == nil {
		t.Fatal("Send succeeded with a failing body")
	}
	if !errors.Is(err, archiveErr) {
		t.Errorf("err = %v, want it to wrap the body's error", err)
	}
	if out[0].Err == nil || !out[0].Err.Temporary || out[0].Err.Op != "data" {
		t.Errorf("outcome %+v, want temporary data error", out[0])
	}
	// Give the server a moment to notice the hang-up; it must hold nothing.
	time.Sleep(100 * time.Millisecond)
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server stored %d messages from a truncated body", n)
	}
}

// blockingReader sends some data, then blocks until released.
type blockingReader struct {
	sent    bool
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "Subject: slow\r\n\r\n"), nil
	}
	<-b.release
	return 0, io.EOF
}

func TestScriptedContextCancelDuringData(t *testing.T) {
	// A context cancelled while the server is slow to answer interrupts the
	// wait at once.
	release := make(chan struct{})
	defer close(release)
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnData: func(string, []string, []byte) error {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			return nil
		},
	})
	c := mustDial(t, srv.Addr, func(o *relay.Options) { o.Timeout = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err := c.Send(ctx, relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("x\r\n"))
	if err == nil {
		t.Fatal("Send succeeded after the context expired")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if !asRelayError(t, err).Temporary || out[0].Err == nil || !out[0].Err.Temporary {
		t.Errorf("err %v / outcome %+v, want temporary", err, out[0])
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Send returned after %v, the context allowed 300ms", d)
	}
}

func TestScriptedVerify(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{
		OnRcpt: func(to string) error {
			if to == "nobody@example.net" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			}
			return nil
		},
	})
	c := mustDial(t, srv.Addr, nil)
	out, err := c.Verify(testContext(t), "a@example.org", []string{"ok@example.net", "nobody@example.net"})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if out[0].Err != nil || out[1].Err == nil || out[1].Err.Enhanced != "5.1.1" {
		t.Errorf("outcomes %+v", out)
	}
	// Verify leaves no transaction behind: a real send follows cleanly.
	out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"ok@example.net"}}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	accepted(t, out, 1)
	if m := srv.Messages(); len(m) != 1 || len(m[0].To) != 1 {
		t.Errorf("server messages %+v, want one with one recipient", m)
	}
}

func TestScriptedInvalidAddressesNeverReachTheWire(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{})
	log, logs := debugLogger()
	c := mustDial(t, srv.Addr, func(o *relay.Options) { o.Logger = log })
	to := []string{"ok@example.net", "evil@example.net>\r\nRCPT TO:<injected@example.net", "x@y>"}
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Err != nil || out[1].Err == nil || out[1].Err.Temporary || out[2].Err == nil {
		t.Errorf("outcomes %+v", out)
	}
	if strings.Contains(logs.String(), "injected") {
		t.Errorf("injected command reached the wire:\n%s", logs.String())
	}
	_, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org>\r\nRSET", To: []string{"ok@example.net"}}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages(); len(m) != 1 || strings.Join(m[0].To, ",") != "ok@example.net" {
		t.Errorf("server messages %+v", m)
	}
	var buf bytes.Buffer
	buf.WriteString(logs.String())
	if strings.Count(buf.String(), "MAIL FROM") != 1 {
		t.Errorf("want exactly one MAIL FROM on the wire:\n%s", buf.String())
	}
}
