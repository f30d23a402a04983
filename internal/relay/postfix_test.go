package relay_test

// Every transaction path against a real Postfix smtpd (PIPELINING and
// CHUNKING advertised), checked in its Maildirs. Skips without Postfix,
// fails without it when CI=true or POPCONN_INTEGRATION=1.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// pathOptions are the three ways a Client sends, as Options.
var pathOptions = []struct {
	mode   string
	mutate func(*relay.Options)
}{
	{"none", func(o *relay.Options) { o.NoPipelining = true }},
	{"pipelining", func(o *relay.Options) { o.NoChunking = true }},
	{"chunking", nil},
}

// edgeBodies are bodies whose bytes a client can easily get wrong. Each
// starts with the headers cleanup(8) would otherwise add, and an id.
func edgeBodies() map[string]string {
	big := strings.Repeat(strings.Repeat("0123456789abcdef", 4)+"\r\n.dot line\r\n", 5<<20/77)
	bodies := map[string]string{
		"dots":         ".leading dot\r\n..two\r\n.\r\nafter a lone dot\r\n",
		"bare CR":      "a\rb\r\nc\r\r\n",
		"bare LF":      "line one\nline two\n",
		"no final end": "ends without a line break",
		"5 MB":         big,
	}
	for name, b := range bodies {
		bodies[name] = fmt.Sprintf("X-Test-Id: %s\r\nFrom: <a@example.org>\r\nDate: Mon, 2 Jan 2006 15:04:05 +0000\r\nMessage-ID: <%s@example.org>\r\n\r\n%s",
			name, strings.ReplaceAll(name, " ", "-"), b)
	}
	return bodies
}

// stored is what the virtual agent writes for a body sent over SMTP: bare
// LF as CRLF, a final line break, and then LF line ends in the Maildir.
// Postfix itself rewrites a bare CR (smtpd: a space inside a line, dropped
// before CRLF) on every path, so that body has its stored form written
// out; the scripted server checks that bare CRs leave the client as they
// are (TestScriptedBareLineEndings).
func stored(name, body string) string {
	b := strings.ReplaceAll(body, "\r\n", "\n")
	b = strings.ReplaceAll(b, "\n", "\r\n")
	if !strings.HasSuffix(b, "\r\n") {
		b += "\r\n"
	}
	b = strings.ReplaceAll(b, "\r\n", "\n")
	if name == "bare CR" {
		b = strings.Replace(b, "a\rb\nc\r\n", "a b\nc\n", 1)
	}
	return b
}

func TestPostfixByteExactOnEveryPath(t *testing.T) {
	rcpts := []string{"none@corp.example", "pipelining@corp.example", "chunking@corp.example"}
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{Recipients: rcpts})
	bodies := edgeBodies()
	for i, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			c := mustDial(t, pf.Addr, p.mutate)
			if got := c.Pipelining(); got != p.mode {
				t.Fatalf("Pipelining() = %q, want %q (extensions %v)", got, p.mode, c.Extensions())
			}
			t.Logf("Postfix advertises %v", c.Extensions())
			for name, body := range bodies {
				env := relay.Envelope{From: "a@example.org", To: []string{rcpts[i]}, Size: int64(len(body))}
				out, err := c.Send(testContext(t), env, strings.NewReader(body))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				accepted(t, out, 1)
			}
			if err := c.Quit(); err != nil {
				t.Errorf("Quit: %v", err)
			}
			got := pf.Messages(t, rcpts[i])
			if len(got) != len(bodies) {
				t.Fatalf("%d messages delivered, want %d", len(got), len(bodies))
			}
			for _, m := range got {
				at := bytes.Index(m.Data, []byte("X-Test-Id: "))
				if at < 0 {
					t.Fatalf("delivered message without its id: %.300q", m.Data)
				}
				name, _, _ := strings.Cut(string(m.Data[at+len("X-Test-Id: "):]), "\n")
				if want := stored(name, bodies[name]); string(m.Data[at:]) != want {
					t.Errorf("%s: delivered bytes differ (%d, want %d)\n got: %.400q\nwant: %.400q", name, len(m.Data[at:]), len(want), m.Data[at:], want)
				}
			}
		})
	}
}

func TestPostfixRefusalsInOrderOnEveryPath(t *testing.T) {
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{Recipients: []string{"one@corp.example", "two@corp.example"}})
	to := []string{"one@corp.example", "nobody@corp.example", "two@corp.example", "x@other.example"}
	for _, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			c := mustDial(t, pf.Addr, p.mutate)
			for range 2 { // the second time after a transaction on the same connection
				out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("Subject: "+p.mode+"\r\n\r\nx\r\n"))
				if err != nil {
					t.Fatal(err)
				}
				checkOutcomes(t, out, to, []string{"ok", "550", "ok", "554"})
				if e := out[1].Err; e.Enhanced != "5.1.1" || !strings.Contains(e.Message, "nobody@corp.example") {
					t.Errorf("unknown user: %v", e)
				}
				if e := out[3].Err; e.Enhanced != "5.7.1" || !strings.Contains(e.Message, "Relay access denied") {
					t.Errorf("other domain: %v", e)
				}
				// No recipient accepted: nothing sent, the connection goes on.
				out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to[1:2]}, strings.NewReader("x\r\n"))
				if err != nil {
					t.Fatal(err)
				}
				checkOutcomes(t, out, to[1:2], []string{"550"})
			}
			c.Quit()
		})
	}
	pf.Idle(t, 20*time.Second)
	for _, r := range []string{"one@corp.example", "two@corp.example"} {
		if n := len(pf.Messages(t, r)); n != 2*len(pathOptions) {
			t.Errorf("%s has %d messages, want %d", r, n, 2*len(pathOptions))
		}
	}
}

func TestPostfixTooManyRecipientsSplitOnEveryPath(t *testing.T) {
	to := make([]string, 10)
	for i := range to {
		to[i] = fmt.Sprintf("user%d@corp.example", i)
	}
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{Recipients: to,
		Listeners: []testenv.PostfixListener{{Name: "limit3", RecipientLimit: 3}}})
	addr := pf.ListenerAddr(t, "limit3")
	for _, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			log, logs := debugLogger()
			c := mustDial(t, addr, func(o *relay.Options) {
				if p.mutate != nil {
					p.mutate(o)
				}
				o.Logger = log
			})
			body := fmt.Sprintf("X-Test-Id: %s\r\nFrom: <a@example.org>\r\nDate: Mon, 2 Jan 2006 15:04:05 +0000\r\nMessage-ID: <split-%s@example.org>\r\nSubject: ten recipients\r\n\r\n%s",
				p.mode, p.mode, strings.Repeat("a line of the body\r\n", 10000))
			hooks, opens := 0, 0
			env := relay.Envelope{From: "a@example.org", To: to, Size: int64(len(body)),
				BeforeEnd: func() error { hooks++; return nil },
				// As the connector would: the archived copy opened again.
				Reopen: func(context.Context) (io.ReadCloser, error) {
					opens++
					return io.NopCloser(onlyReader{strings.NewReader(body)}), nil
				}}
			out, err := c.Send(testContext(t), env, onlyReader{strings.NewReader(body)})
			if err != nil {
				t.Fatal(err)
			}
			accepted(t, out, len(to))
			if hooks != 1 {
				t.Errorf("BeforeEnd called %d times, want once", hooks)
			}
			if opens != 3 {
				t.Errorf("body reopened %d times, want 3", opens)
			}
			// Each transaction has its own queue id in the final reply.
			var replies []string
			for i, o := range out {
				if i == 0 || o.Reply != out[i-1].Reply {
					replies = append(replies, o.Reply)
				}
			}
			if len(replies) != 4 || out[2].Reply != out[0].Reply || out[3].Reply == out[2].Reply || out[5].Reply != out[3].Reply ||
				out[6].Reply == out[5].Reply || out[8].Reply != out[6].Reply || out[9].Reply == out[8].Reply {
				for _, o := range out {
					t.Logf("%s: %s", o.Address, o.Reply)
				}
				t.Errorf("replies %q, want 4 transactions of 3, 3, 3 and 1 recipients", replies)
			}
			if n := strings.Count(logs.String(), "MAIL FROM:"); n != 4 {
				t.Errorf("%d MAIL commands, want 4", n)
			}
			if !strings.Contains(logs.String(), "4.5.3 Error: too many recipients") {
				t.Errorf("Postfix never said too many recipients:\n%.3000s", logs.String())
			}
			c.Quit()
		})
	}
	for _, r := range to {
		got := pf.Messages(t, r)
		if len(got) != len(pathOptions) {
			t.Errorf("%s has %d messages, want %d", r, len(got), len(pathOptions))
		}
	}
}
