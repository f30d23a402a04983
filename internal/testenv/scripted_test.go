package testenv

import (
	"bytes"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func sendVia(t *testing.T, c *smtp.Client, from string, to []string, msg string) error {
	t.Helper()
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestScriptedSMTPRejections(t *testing.T) {
	t.Parallel()
	tempFail := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	tests := []struct {
		name     string
		script   SMTPScript
		to       []string
		msg      string
		wantCode int      // SMTP code of the error the client sees; 0 = success
		wantTo   []string // recipients recorded when accepted
	}{
		{
			name:   "accept",
			to:     []string{"x@example.test", "y@example.test"},
			msg:    "Subject: ok\r\n\r\n.dot\r\nbody\r\n",
			wantTo: []string{"x@example.test", "y@example.test"},
		},
		{
			name:     "MAIL 451",
			script:   SMTPScript{OnMail: func(string) error { return tempFail }},
			to:       []string{"x@example.test"},
			msg:      "Subject: m\r\n\r\nb\r\n",
			wantCode: 451,
		},
		{
			name: "RCPT 550 for one recipient",
			script: SMTPScript{OnRcpt: func(to string) error {
				if strings.HasPrefix(to, "bad") {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
				}
				return nil
			}},
			to:       []string{"good@example.test", "bad@example.test"},
			msg:      "Subject: r\r\n\r\nb\r\n",
			wantCode: 550,
		},
		{
			name: "DATA 554",
			script: SMTPScript{OnData: func(string, []string, []byte) error {
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"}
			}},
			to:       []string{"x@example.test"},
			msg:      "Subject: d\r\n\r\nb\r\n",
			wantCode: 554,
		},
		{
			name:     "too large",
			script:   SMTPScript{MaxMessageBytes: 100},
			to:       []string{"x@example.test"},
			msg:      "Subject: big\r\n\r\n" + strings.Repeat("y", 200) + "\r\n",
			wantCode: 552,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := StartScriptedSMTP(t, tc.script)
			c, err := smtp.Dial(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = sendVia(t, c, "from@example.test", tc.to, tc.msg)
			if code := smtpCode(err); code != tc.wantCode {
				t.Fatalf("error %v (code %d), want code %d", err, code, tc.wantCode)
			}
			got := srv.Messages()
			if tc.wantCode != 0 {
				if len(got) != 0 {
					t.Fatalf("rejected transaction recorded: %+v", got)
				}
				return
			}
			want := []Received{{From: "from@example.test", To: tc.wantTo, Data: []byte(tc.msg)}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Messages = %+v, want %+v", got, want)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			if n := srv.Sessions(); n != 1 {
				t.Fatalf("Sessions = %d, want 1", n)
			}
		})
	}
}

func TestScriptedSMTPExactBytes(t *testing.T) {
	t.Parallel()
	hookData := make(chan []byte, 1)
	srv := StartScriptedSMTP(t, SMTPScript{OnData: func(_ string, _ []string, data []byte) error {
		hookData <- append([]byte(nil), data...)
		return nil
	}})
	s := dialSMTP(t, srv.Addr)
	s.cmd(250, "EHLO client.test")
	s.cmd(250, "MAIL FROM:<>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(354, "DATA")
	// Bare LF and bare CR survive here, unlike in smtp-sink.
	s.c.Write([]byte("bare\nlf\r\nbare\rcr\r\n..stuffed\r\n.\r\n"))
	s.expect(250)
	want := []byte("bare\nlf\r\nbare\rcr\r\n.stuffed\r\n")
	got := srv.Messages()
	if len(got) != 1 || !bytes.Equal(got[0].Data, want) || got[0].From != "" {
		t.Fatalf("Messages = %+v, want data %q from null sender", got, want)
	}
	if seen := <-hookData; !bytes.Equal(seen, want) {
		t.Fatalf("OnData saw %q, want %q", seen, want)
	}
}

func TestScriptedSMTPDropAfterData(t *testing.T) {
	t.Parallel()
	srv := StartScriptedSMTP(t, SMTPScript{OnData: func(string, []string, []byte) error { return ErrDropConnection }})
	s := dialSMTP(t, srv.Addr)
	s.cmd(250, "EHLO client.test")
	s.cmd(250, "MAIL FROM:<a@example.test>")
	s.cmd(250, "RCPT TO:<b@example.test>")
	s.cmd(354, "DATA")
	s.c.Write([]byte("Subject: lost reply\r\n\r\nb\r\n.\r\n"))
	_ = s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := s.c.Read(buf)
	if err == nil || n != 0 {
		t.Fatalf("read %q, %v: want the connection closed without a reply", buf[:n], err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection was not closed (read timed out)")
	}
	if got := srv.Messages(); len(got) != 0 {
		t.Fatalf("dropped transaction recorded: %+v", got)
	}
}

func TestScriptedSMTPAuthAndTLS(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	srv := StartScriptedSMTP(t, SMTPScript{TLS: ca, AuthUsers: map[string]string{"relay": "s3cret"}})

	// Plaintext: STARTTLS offered, AUTH not (TLS required first).
	plain, err := smtp.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := plain.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if ok, _ := plain.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	if err := plain.Mail("a@example.test", nil); smtpCode(err) != 530 {
		t.Fatalf("MAIL without AUTH: %v, want 530", err)
	}
	plain.Close()

	c, err := smtp.DialStartTLS(srv.Addr, ca.ClientConfig("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.SupportsAuth("PLAIN") {
		t.Fatal("AUTH PLAIN not offered after TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "wrong")); smtpCode(err) != 535 {
		t.Fatalf("bad password: %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "s3cret")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := sendVia(t, c, "a@example.test", []string{"b@example.test"}, "Subject: authed\r\n\r\nb\r\n"); err != nil {
		t.Fatal(err)
	}
	got := srv.Transactions()
	if len(got) != 1 || got[0].AuthUser != "relay" || !got[0].TLS {
		t.Fatalf("Transactions = %+v, want one with AuthUser relay over TLS", got)
	}
	if m := srv.Messages(); len(m) != 1 || !reflect.DeepEqual(m[0], got[0].Received) {
		t.Fatalf("Messages = %+v, want the Received of the transaction", m)
	}
	if n := srv.Sessions(); n != 2 {
		t.Fatalf("Sessions = %d, want 2", n)
	}
}
