package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestSplitAddr(t *testing.T) {
	cases := []struct {
		in, host, port string
		bad            bool
	}{
		{in: "mail.example.com:587", host: "mail.example.com", port: "587"},
		{in: "[192.0.2.1]:25", host: "192.0.2.1", port: "25"},
		{in: "[192.0.2.1]", bad: true}, // no port: its default is the configuration's
		{in: "[IPv6:2001:db8::1]:2525", host: "2001:db8::1", port: "2525"},
		{in: "[2001:db8::1]:25", host: "2001:db8::1", port: "25"},
		{in: "2001:db8::1", bad: true},
		{in: "mail.example.com", bad: true},
		{in: " vpce-123.smtp.example:25 ", host: "vpce-123.smtp.example", port: "25"},
		{in: "", bad: true},
		{in: "host:0", bad: true},
		{in: "host:99999", bad: true},
		{in: "host:smtp", bad: true},
		{in: ":25", bad: true},
		{in: "a b:25", bad: true},
	}
	for _, tc := range cases {
		host, port, err := splitAddr(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("splitAddr(%q) = %q, %q; want an error", tc.in, host, port)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("splitAddr(%q) = %q, %q, %v; want %q, %q", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestParseEHLO(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"greeting then EHLO", "220 mx ESMTP\r\n250-mx hello\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-AUTH LOGIN PLAIN\r\n250-starttls\r\n250 ENHANCEDSTATUSCODES\r\n",
			map[string]string{"SIZE": "35882577", "8BITMIME": "", "AUTH": "LOGIN PLAIN", "STARTTLS": "", "ENHANCEDSTATUSCODES": ""}},
		{"HELO after refused EHLO", "220 mx\r\n502 5.5.2 Error: command not recognized\r\n250 mx\r\n", map[string]string{}},
		{"single-line EHLO", "250 mx\r\n", map[string]string{}},
		{"LF only", "250-mx\n250 SIZE\n", map[string]string{"SIZE": ""}},
		{"error reply", "220 mx\r\n554 go away\r\n", map[string]string{}},
	}
	for _, tc := range cases {
		got := parseEHLO([]byte(tc.in))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	cases := []struct {
		name      string
		err       error
		code      int
		enhanced  string
		temporary bool
		lost      bool
		says      string
	}{
		{"5xx with enhanced", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relay denied"}, 550, "5.7.1", false, false, "550 5.7.1 relay denied"},
		{"4xx", &smtp.SMTPError{Code: 451, Message: "later"}, 451, "", true, false, "451 later"},
		{"421 closes", &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "bye"}, 421, "4.4.2", true, true, "421 4.4.2 bye"},
		{"enhanced code not set", &smtp.SMTPError{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "no"}, 554, "", false, false, "554 no"},
		{"textproto reply", &textproto.Error{Code: 454, Msg: "4.7.0 TLS not available"}, 454, "4.7.0", true, false, "454 4.7.0 TLS not available"},
		{"odd code is unknown", &smtp.SMTPError{Code: 354, Message: "?"}, 354, "", true, false, "354"},
		{"timeout", timeout, 0, "", true, true, "timed out"},
		{"eof", io.EOF, 0, "", true, true, "closed by the server"},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), 0, "", true, true, "cancelled"},
		{"unknown", errors.New("something odd"), 0, "", true, true, "something odd"},
	}
	for _, tc := range cases {
		e := classify("rcpt", tc.err)
		if e.Code != tc.code || e.Enhanced != tc.enhanced || e.Temporary != tc.temporary || connectionLost(e) != tc.lost {
			t.Errorf("%s: %+v lost=%v; want code %d enhanced %q temporary %v lost %v", tc.name, e, connectionLost(e), tc.code, tc.enhanced, tc.temporary, tc.lost)
		}
		if !strings.Contains(e.Error(), tc.says) || !strings.HasPrefix(e.Error(), "smtp rcpt: ") {
			t.Errorf("%s: Error() = %q, want it to contain %q", tc.name, e.Error(), tc.says)
		}
		if !errors.Is(e, tc.err) {
			t.Errorf("%s: does not unwrap to the original error", tc.name)
		}
	}
}

func TestAsError(t *testing.T) {
	if AsError(nil) != nil {
		t.Error("AsError(nil) != nil")
	}
	orig := &Error{Op: "data", Code: 552, Message: "too big"}
	if got := AsError(fmt.Errorf("wrapped: %w", orig)); got != orig {
		t.Errorf("AsError did not find the wrapped *Error: %v", got)
	}
	if got := AsError(errors.New("archive: disk on fire")); !got.Temporary || got.Code != 0 {
		t.Errorf("unknown error classified %+v, want temporary", got)
	}
	if got := AsError(&smtp.SMTPError{Code: 550, Message: "no"}); got.Temporary {
		t.Errorf("5xx classified temporary: %+v", got)
	}
}

func TestSecretsScrub(t *testing.T) {
	s := newSecrets(&AuthConfig{Username: "u", Password: "hunter2"})
	e := &Error{Op: "auth", Code: 535, Message: "bad: hunter2 / AHUAaHVudGVyMg== / aHVudGVyMg",
		Err: &smtp.SMTPError{Code: 535, Message: "bad: hunter2"}}
	got := s.scrubError(e)
	all := got.Error() + got.Message + got.Err.Error()
	for _, leak := range []string{"hunter2", "AHUAaHVudGVyMg", "aHVudGVyMg"} {
		if strings.Contains(all, leak) {
			t.Errorf("%q survives scrubbing: %s", leak, all)
		}
	}
	if got.Code != 535 || e.Message == got.Message {
		t.Errorf("scrubError changed the code or modified its input: %+v / %+v", got, e)
	}
	if newSecrets(nil).scrub("x") != "x" || newSecrets(&AuthConfig{Username: "u"}).scrub("u") != "u" {
		t.Error("no password should scrub nothing")
	}
}

func TestLoginClientPrompts(t *testing.T) {
	for _, prompts := range [][]string{{"Username:", "Password:"}, {"username:", "password:"}, {"", ""}, {"User Name", "Passwort"}} {
		l := &loginClient{username: "me", password: "pw"}
		mech, ir, err := l.Start()
		if mech != "LOGIN" || ir != nil || err != nil {
			t.Fatalf("Start = %q %q %v", mech, ir, err)
		}
		a, _ := l.Next([]byte(prompts[0]))
		b, _ := l.Next([]byte(prompts[1]))
		if string(a) != "me" || string(b) != "pw" {
			t.Errorf("prompts %q: answered %q, %q", prompts, a, b)
		}
		if _, err := l.Next([]byte("what?")); err == nil {
			t.Errorf("a third unknown prompt was answered")
		}
	}
}

func TestTranscriptRedactsAuthAndSummarisesData(t *testing.T) {
	var sb strings.Builder
	tr := newTranscript(newTestLogger(&sb), newSecrets(&AuthConfig{Username: "u", Password: "hunter2"}))
	tr.client([]byte("EHLO x\r\n"))
	tr.redact = true
	tr.client([]byte("AUTH PLAIN AHUAaHVudGVyMg==\r\n"))
	tr.client([]byte("aHVudGVyMg==\r\n"))
	tr.redact = false
	tr.server([]byte("535 5.7.8 no hunter2\r\n"))
	tr.beginData()
	tr.client([]byte("secret body line\r\n.\r\n"))
	tr.server([]byte("250 2.0.0 ok\r\n"))
	out := sb.String()
	for _, leak := range []string{"hunter2", "aHVudGVyMg", "secret body"} {
		if strings.Contains(out, leak) {
			t.Errorf("transcript leaks %q:\n%s", leak, out)
		}
	}
	for _, want := range []string{"EHLO x", "AUTH PLAIN [redacted]", "[message data, 21 bytes]", "250 2.0.0 ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "message data") > strings.Index(out, "250 2.0.0 ok") {
		t.Errorf("data summary logged after the reply to it:\n%s", out)
	}
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
