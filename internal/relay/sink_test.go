package relay_test

// Integration tests against Postfix's smtp-sink, a real SMTP server, started
// by internal/testenv on a loopback port.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// dotsMessage has lines that need dot-stuffing (RFC 5321 §4.5.2), a line of
// 2,000 characters (twice the RFC limit, which Exchange tolerates and which
// must not be folded or cut by the client) and CRLF line ends throughout.
func dotsMessage() []byte {
	var b bytes.Buffer
	b.WriteString(crlf("From: sender@example.org\nTo: rcpt@example.net\nSubject: dots and a long line\nMessage-ID: <dots@example.org>\n\n"))
	b.WriteString(crlf(".leading dot\n..two leading dots\n.\nthe line above was a lone dot\n"))
	b.WriteString(strings.Repeat("0123456789", 200) + "\r\n")
	b.WriteString(crlf(". dot space\nlast line\n"))
	return b.Bytes()
}

func TestSinkMessageArrivesByteExact(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	c := mustDial(t, sink.Addr, nil)
	msg := dotsMessage()
	env := relay.Envelope{From: "sender@example.org", To: []string{"rcpt@example.net", "second@example.net"}, Size: int64(len(msg))}
	out, err := c.Send(testContext(t), env, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 2)
	if out[0].Reply == "" || out[0].Address != "rcpt@example.net" || out[1].Address != "second@example.net" {
		t.Errorf("outcomes = %+v, want addresses in order and the DATA reply text", out)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	got := sink.WaitFor(t, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("sink has %d messages, want 1", len(got))
	}
	r := got[0]
	dump := sink.Dumps(t)[0]
	if r.From != env.From || strings.Join(r.To, ",") != strings.Join(env.To, ",") {
		t.Errorf("envelope at sink = %q -> %q, want %q -> %q", r.From, r.To, env.From, env.To)
	}
	if !bytes.Equal(r.Data, msg) {
		t.Errorf("data at sink differs from what was sent\n got: %q\nwant: %q", r.Data, msg)
	}
	if dump.Helo != "relay-test.example" {
		t.Errorf("EHLO argument = %q, want relay-test.example", dump.Helo)
	}
	if _, advertised := c.Extensions()["SIZE"]; !advertised && strings.Contains(dump.MailArgs, "SIZE=") {
		// RFC 1870: SIZE= only to a server that advertised SIZE.
		t.Errorf("MAIL FROM arguments %q declare SIZE to a server that did not advertise it", dump.MailArgs)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func TestSinkNullSenderAndEightBit(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	c := mustDial(t, sink.Addr, nil)
	if _, ok := c.Extensions()["8BITMIME"]; !ok {
		t.Fatalf("smtp-sink should advertise 8BITMIME; extensions %v", c.Extensions())
	}
	msg := []byte(crlf("Subject: =?utf-8?q?caf=C3=A9?=\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\ncafé crème\n"))
	out, err := c.Send(testContext(t), relay.Envelope{To: []string{"postmaster@example.net"}, Needs8BitMIME: true}, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	if out[0].Warning != "" {
		t.Errorf("warning %q although 8BITMIME is advertised", out[0].Warning)
	}
	r := sink.WaitFor(t, 1, 10*time.Second)[0]
	args := sink.Dumps(t)[0].MailArgs
	if r.From != "" || !strings.HasPrefix(args, "<>") || !strings.Contains(args, "BODY=8BITMIME") {
		t.Errorf("MAIL FROM args = %q, want the null sender <> with BODY=8BITMIME", args)
	}
	if !bytes.Equal(r.Data, msg) {
		t.Errorf("8-bit data altered: %q", r.Data)
	}
}

func TestSinkEightBitNotAdvertisedIsSentWithWarning(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-8"}})
	c := mustDial(t, sink.Addr, nil)
	msg := []byte(crlf("Subject: x\n\ncafé\n"))
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, Needs8BitMIME: true}, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	if !strings.Contains(out[0].Warning, "8BITMIME") {
		t.Errorf("Warning = %q, want a note that 8BITMIME was not advertised", out[0].Warning)
	}
	r := sink.WaitFor(t, 1, 10*time.Second)[0]
	args := sink.Dumps(t)[0].MailArgs
	if strings.Contains(args, "BODY=") || !bytes.Equal(r.Data, msg) {
		t.Errorf("MAIL args %q / data %q: want no BODY= and the bytes unchanged", args, r.Data)
	}
}

func TestSinkStartTLSVerified(t *testing.T) {
	ca := testenv.NewCA(t)
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: ca})
	log, logs := debugLogger()
	c := mustDial(t, sink.Addr, func(o *relay.Options) {
		o.TLS = tlsmode.StartTLS
		o.TLSConfig = &tls.Config{RootCAs: ca.Pool}
		o.ServerName = "localhost"
		o.Logger = log
	})
	if !c.TLS() {
		t.Fatal("connection is not encrypted after STARTTLS")
	}
	if _, ok := c.Extensions()["STARTTLS"]; ok {
		t.Errorf("extensions after TLS still list STARTTLS: %v (the post-TLS EHLO was not used)", c.Extensions())
	}
	msg := dotsMessage()
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	r := sink.WaitFor(t, 1, 10*time.Second)[0]
	if !bytes.Equal(r.Data, msg) {
		t.Errorf("data through TLS differs:\n got %q\nwant %q", r.Data, msg)
	}
	transcript := logs.String()
	for _, want := range []string{"line=STARTTLS", "TLS established", "message data, "} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q:\n%s", want, transcript)
		}
	}
	if n := strings.Count(transcript, `line="EHLO relay-test.example"`); n != 2 {
		t.Errorf("EHLO sent %d times, want 2 (before and after TLS, RFC 3207 §4.2):\n%s", n, transcript)
	}
	if strings.Contains(transcript, "longline") || strings.Contains(transcript, "0123456789012345678901234567890123456789") {
		t.Errorf("the message body leaked into the transcript")
	}
}

func TestSinkCertificateThatDoesNotVerify(t *testing.T) {
	ca := testenv.NewCA(t)
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: ca})
	other := testenv.NewCA(t)
	cases := []struct {
		name       string
		pool       *tls.Config
		serverName string
	}{
		{"unknown authority", &tls.Config{RootCAs: other.Pool}, "localhost"},
		{"name mismatch", &tls.Config{RootCAs: ca.Pool}, "exchange.example.com"},
		{"system roots", nil, "localhost"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []tlsmode.Mode{tlsmode.StartTLS, tlsmode.Opportunistic} {
				_, err := dial(t, sink.Addr, func(o *relay.Options) {
					o.TLS = mode
					o.TLSConfig = tc.pool
					o.ServerName = tc.serverName
				})
				if err == nil {
					t.Fatalf("%s: Dial succeeded with a certificate that should not verify", mode)
				}
				e := asRelayError(t, err)
				if e.Op != "tls" || !e.Temporary {
					t.Errorf("%s: error %v: Op %q Temporary %v, want Op tls, temporary", mode, e, e.Op, e.Temporary)
				}
			}
		})
	}
	if n := len(sink.Messages(t)); n != 0 {
		t.Errorf("sink received %d messages", n)
	}
}

func TestSinkStartTLSRequiredButNotOffered(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{}) // no STARTTLS
	log, logs := debugLogger()
	_, err := dial(t, sink.Addr, func(o *relay.Options) {
		o.TLS = tlsmode.StartTLS
		o.Logger = log
	})
	if err == nil {
		t.Fatal("Dial succeeded although STARTTLS is required and not offered")
	}
	e := asRelayError(t, err)
	if e.Op != "tls" || !strings.Contains(e.Message, "STARTTLS") {
		t.Errorf("error = %v, want Op tls about STARTTLS", e)
	}
	// Nothing after EHLO may have gone out in plaintext.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "dir=C") && !strings.Contains(line, "line=\"EHLO ") {
			t.Errorf("client sent more than EHLO in plaintext: %s", line)
		}
	}
	if n := len(sink.Messages(t)); n != 0 {
		t.Errorf("sink received %d messages", n)
	}
}

func TestSinkOpportunisticFallsBackToPlaintext(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{}) // no STARTTLS
	c := mustDial(t, sink.Addr, withTLS(tlsmode.Opportunistic, nil))
	if c.TLS() {
		t.Fatal("TLS reported on a server without STARTTLS")
	}
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader(crlf("Subject: plain\n\nhello\n")))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	sink.WaitFor(t, 1, 10*time.Second)
}

func TestSinkRejectAtRcptIsPermanentWithEnhancedCode(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-f", "RCPT", "-B", "550 5.7.1 Relaying denied"}})
	log, logs := debugLogger()
	c := mustDial(t, sink.Addr, func(o *relay.Options) { o.Logger = log })
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"x@example.net", "y@example.net"}}, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatalf("Send: %v (a refusal is an outcome, not a broken connection)", err)
	}
	for _, o := range out {
		if o.Err == nil || o.Err.Op != "rcpt" || o.Err.Code != 550 || o.Err.Enhanced != "5.7.1" || o.Err.Temporary {
			t.Errorf("%s: %+v, want permanent rcpt 550 5.7.1", o.Address, o.Err)
		}
		if o.Err != nil && !strings.Contains(o.Err.Message, "Relaying denied") {
			t.Errorf("message %q lacks the server text", o.Err.Message)
		}
	}
	if strings.Contains(logs.String(), "line=DATA") {
		t.Error("DATA was sent although no recipient was accepted")
	}
	if !strings.Contains(logs.String(), "line=RSET") {
		t.Error("no RSET after a transaction without recipients")
	}
	// The connection stays usable for the next message.
	out, err = c.Verify(testContext(t), "a@example.org", []string{"z@example.net"})
	if err != nil || out[0].Err == nil || out[0].Err.Code != 550 {
		t.Errorf("Verify after refusal: %+v, %v", out, err)
	}
}

func TestSinkRejectAfterDataWith552(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-f", ".", "-B", "552 5.3.4 Message size exceeds fixed limit"}})
	c := mustDial(t, sink.Addr, nil)
	send := func() []relay.Outcome {
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"x@example.net", "y@example.net"}}, strings.NewReader("Subject: x\r\n\r\nbig\r\n"))
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		return out
	}
	for round := 0; round < 2; round++ { // the second proves the connection is reusable
		for _, o := range send() {
			if o.Err == nil || o.Err.Op != "data" || o.Err.Code != 552 || o.Err.Enhanced != "5.3.4" || o.Err.Temporary {
				t.Errorf("round %d %s: %+v, want permanent data 552 5.3.4", round, o.Address, o.Err)
			}
		}
	}
}

func TestSink421MidSession(t *testing.T) {
	for _, cmd := range []string{"RCPT", "."} {
		t.Run(cmd, func(t *testing.T) {
			sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-Q", cmd}})
			c := mustDial(t, sink.Addr, nil)
			out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"x@example.net", "y@example.net"}}, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
			if err == nil {
				t.Fatal("Send after a 421 returned no error")
			}
			e := asRelayError(t, err)
			if !e.Temporary || e.Code != 421 {
				t.Errorf("err = %v, want temporary 421", e)
			}
			if len(out) != 2 {
				t.Fatalf("%d outcomes", len(out))
			}
			for _, o := range out {
				if o.Err == nil || !o.Err.Temporary {
					t.Errorf("%s: %+v, want a temporary error", o.Address, o.Err)
				}
			}
			// The client knows it is dead: the next Send fails at once.
			_, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"x@example.net"}}, strings.NewReader("x\r\n"))
			if err == nil || !asRelayError(t, err).Temporary {
				t.Errorf("Send on a dead connection: %v", err)
			}
		})
	}
}

func TestSinkStopsAnsweringAfterDot(t *testing.T) {
	// smtp-sink waits 30 s before answering ".": the client must give up
	// after its Timeout, with a temporary error, and not send anything more.
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-W", ".:30"}})
	const timeout = 1500 * time.Millisecond
	c := mustDial(t, sink.Addr, func(o *relay.Options) { o.Timeout = timeout })
	start := time.Now()
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"x@example.net"}}, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Send returned no error although the server never answered")
	}
	e := asRelayError(t, err)
	if !e.Temporary || e.Op != "data" || e.Code != 0 {
		t.Errorf("err = %v (Op %q Code %d Temporary %v), want temporary data error without code", e, e.Op, e.Code, e.Temporary)
	}
	if !strings.Contains(e.Error(), "timed out") {
		t.Errorf("err = %v, want it to say it timed out", e)
	}
	if out[0].Err == nil || !out[0].Err.Temporary {
		t.Errorf("outcome %+v, want temporary", out[0])
	}
	if elapsed > timeout+3*time.Second {
		t.Errorf("Send took %v with Timeout %v", elapsed, timeout)
	}
}

func TestSinkConnectionReuse(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	log, logs := debugLogger()
	c := mustDial(t, sink.Addr, func(o *relay.Options) { o.Logger = log })
	for i := 0; i < 5; i++ {
		msg := crlf("Subject: message " + itoa(i) + "\n\nbody " + itoa(i) + "\n")
		out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader(msg))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		accepted(t, out, 1)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	got := sink.WaitFor(t, 5, 10*time.Second)
	if len(got) != 5 {
		t.Fatalf("sink has %d messages, want 5", len(got))
	}
	if n := strings.Count(logs.String(), "dir=S line=\"220 "); n != 1 {
		t.Errorf("saw %d greetings, want 1 (one session for 5 messages)", n)
	}
}

func TestSinkConnectRefused(t *testing.T) {
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	addr := sink.Addr
	sink.Stop(t)
	_, err := dial(t, addr, nil)
	if err == nil {
		t.Fatal("Dial to a stopped server succeeded")
	}
	e := asRelayError(t, err)
	if e.Op != "connect" || !e.Temporary || !errors.Is(e, e.Err) {
		t.Errorf("err = %v, want temporary connect error", e)
	}
}
