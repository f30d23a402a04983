package relay_test

// A few hostile or odd servers that neither smtp-sink nor the go-smtp based
// scripted server can imitate, written as line-by-line dialogues on a
// loopback listener.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// dialogue is one server side of a session: it reads with line and writes
// with say.
type dialogue struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (d *dialogue) line() string {
	_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := d.r.ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimRight(s, "\r\n")
}

// say sends lines in one write, as a server (or an injecting man in the
// middle) puts them in one segment.
func (d *dialogue) say(lines ...string) {
	io.WriteString(d.conn, strings.Join(lines, "\r\n")+"\r\n")
}

// fakeServer serves one connection on 127.0.0.1 with script and returns the
// address; the commands the client sent are in the returned log once the
// script ends.
func fakeServer(t *testing.T, script func(d *dialogue)) (addr string, done <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	finished := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(finished)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		script(&dialogue{t: t, conn: c, r: bufio.NewReader(c)})
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), finished
}

func TestFakeServerEchoingCredentialsIsScrubbed(t *testing.T) {
	const user, password = "svc-relay", "Tr0ub4dor&3-horse"
	for _, mech := range []string{"plain", "login"} {
		t.Run(mech, func(t *testing.T) {
			addr, _ := fakeServer(t, func(d *dialogue) {
				d.say("220 fake.test ESMTP")
				d.line() // EHLO
				d.say("250-fake.test", "250-AUTH PLAIN LOGIN", "250 ENHANCEDSTATUSCODES")
				var seen []string
				cmd := d.line()
				seen = append(seen, cmd)
				if strings.HasPrefix(cmd, "AUTH LOGIN") {
					d.say("334 " + base64.StdEncoding.EncodeToString([]byte("Username:")))
					seen = append(seen, d.line())
					d.say("334 " + base64.StdEncoding.EncodeToString([]byte("Password:")))
					seen = append(seen, d.line())
				}
				// A careless server quoting what it was sent, encoded and
				// decoded.
				var decoded []string
				for _, s := range seen {
					f := strings.Fields(s)
					b, _ := base64.StdEncoding.DecodeString(f[len(f)-1])
					decoded = append(decoded, string(b))
				}
				d.say("535-5.7.8 Authentication failed for "+strings.Join(seen, " "),
					"535 5.7.8 decoded: "+strings.ReplaceAll(strings.Join(decoded, " "), "\x00", " "))
				d.line()
			})
			log, logs := debugLogger()
			_, err := dial(t, addr, func(o *relay.Options) {
				o.Logger = log
				o.AllowPlaintextAuth = true // loopback fake without TLS
				o.Auth = &relay.AuthConfig{Mechanism: mech, Username: user, Password: password}
			})
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			e := asRelayError(t, err)
			if e.Op != "auth" || e.Code != 535 || e.Enhanced != "5.7.8" || !strings.Contains(e.Message, "[redacted]") {
				t.Errorf("err = %v, want auth 535 5.7.8 with the echo redacted", e)
			}
			all := err.Error() + "\n" + e.Message + "\n" + logs.String()
			if e.Err != nil {
				all += "\n" + e.Err.Error()
			}
			assertNoSecret(t, all, user, password)
			if !strings.Contains(logs.String(), "AUTH "+strings.ToUpper(mech)) {
				t.Errorf("transcript does not show the AUTH command:\n%s", logs.String())
			}
		})
	}
}

func TestFakeServerAuthLoginSucceeds(t *testing.T) {
	const user, password = "svc-relay", "pw-login"
	var got []string
	addr, done := fakeServer(t, func(d *dialogue) {
		d.say("220 fake.test ESMTP")
		d.line()
		d.say("250-fake.test", "250 AUTH LOGIN")
		got = append(got, d.line())
		d.say("334 VXNlcm5hbWU6") // Username:
		got = append(got, d.line())
		d.say("334 UGFzc3dvcmQ6") // Password:
		got = append(got, d.line())
		d.say("235 2.7.0 Authentication successful")
		d.line() // QUIT
		d.say("221 bye")
	})
	c := mustDial(t, addr, func(o *relay.Options) {
		o.AllowPlaintextAuth = true
		o.Auth = &relay.AuthConfig{Mechanism: "LOGIN", Username: user, Password: password}
	})
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	<-done
	enc := base64.StdEncoding.EncodeToString
	want := []string{"AUTH LOGIN", enc([]byte(user)), enc([]byte(password))}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("AUTH LOGIN dialogue %q, want %q", got, want)
	}
}

func TestFakeServerStartTLSInjectionRefused(t *testing.T) {
	// A man in the middle appends a command-looking line right after the 220
	// to STARTTLS (CVE-2011-0411 style): the client must not go on.
	ca := testenv.NewCA(t)
	addr, _ := fakeServer(t, func(d *dialogue) {
		d.say("220 fake.test ESMTP")
		d.line()
		d.say("250-fake.test", "250 STARTTLS")
		d.line()
		d.say("220 2.0.0 go ahead", "250 injected")
		time.Sleep(200 * time.Millisecond)
	})
	_, err := dial(t, addr, withTLS(tlsmode.StartTLS, &tls.Config{RootCAs: ca.Pool}))
	if err == nil {
		t.Fatal("Dial succeeded")
	}
	if e := asRelayError(t, err); e.Op != "tls" || !strings.Contains(e.Message, "injection") {
		t.Errorf("err = %v, want a tls error about injection", e)
	}
}

func TestFakeServerStartTLSRefusedReply(t *testing.T) {
	for _, tc := range []struct {
		mode    tlsmode.Mode
		wantErr bool
	}{
		{tlsmode.StartTLS, true},
		{tlsmode.Opportunistic, false},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			var commands []string
			addr, done := fakeServer(t, func(d *dialogue) {
				d.say("220 fake.test ESMTP")
				d.line()
				d.say("250-fake.test", "250 STARTTLS")
				d.line()
				d.say("454 4.7.0 TLS not available due to temporary reason")
				for {
					l := d.line()
					if l == "" {
						return
					}
					commands = append(commands, l)
					switch {
					case l == "DATA":
						d.say("354 go")
						for d.line() != "." {
						}
						d.say("250 2.0.0 queued as X")
					case l == "QUIT":
						d.say("221 bye")
						return
					default:
						d.say("250 2.0.0 ok")
					}
				}
			})
			c, err := dial(t, addr, withTLS(tc.mode, nil))
			if tc.wantErr {
				if err == nil {
					t.Fatal("Dial succeeded although required STARTTLS was refused")
				}
				e := asRelayError(t, err)
				if e.Op != "tls" || e.Code != 454 || e.Enhanced != "4.7.0" || !e.Temporary {
					t.Errorf("err = %v, want temporary tls 454 4.7.0", e)
				}
				<-done
				if len(commands) != 0 {
					t.Errorf("commands sent in plaintext after the refusal: %q", commands)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("x\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			accepted(t, out, 1)
			if out[0].Reply != "2.0.0 queued as X" {
				t.Errorf("Reply = %q", out[0].Reply)
			}
			c.Quit()
			<-done
		})
	}
}

func TestSinkHeloFallback(t *testing.T) {
	// smtp-sink -e does not announce ESMTP: EHLO is refused and HELO used.
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{ExtraArgs: []string{"-e"}})
	log, logs := debugLogger()
	c := mustDial(t, sink.Addr, func(o *relay.Options) { o.Logger = log })
	if len(c.Extensions()) != 0 {
		t.Errorf("extensions after HELO: %v", c.Extensions())
	}
	msg := dotsMessage()
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	accepted(t, out, 1)
	if !strings.Contains(logs.String(), `line="HELO relay-test.example"`) {
		t.Errorf("HELO not used:\n%s", logs.String())
	}
	if r := sink.WaitFor(t, 1, 10*time.Second)[0]; !bytes.Equal(r.Data, msg) {
		t.Errorf("data differs after HELO fallback")
	}
}

func TestSinkImplicitTLS(t *testing.T) {
	// smtp-sink has no TLS; a TLS-terminating forwarder in front of it makes
	// an implicit-TLS (port 465 style, RFC 8314) endpoint.
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	ca := testenv.NewCA(t)
	_, _, cert := ca.Issue(t, "localhost", "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		front, err := ln.Accept()
		if err != nil {
			return
		}
		defer front.Close()
		back, err := net.Dial("tcp", sink.Addr)
		if err != nil {
			return
		}
		defer back.Close()
		go io.Copy(back, front)
		io.Copy(front, back)
	}()
	c := mustDial(t, ln.Addr().String(), withTLS(tlsmode.Implicit, &tls.Config{RootCAs: ca.Pool}))
	if !c.TLS() {
		t.Fatal("implicit TLS not reported")
	}
	msg := dotsMessage()
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	accepted(t, out, 1)
	c.Quit()
	if r := sink.WaitFor(t, 1, 10*time.Second)[0]; !bytes.Equal(r.Data, msg) {
		t.Errorf("data differs through implicit TLS")
	}
}

// Envelope.BeforeEnd: with an error the final "." never goes on the wire
// (the server keeps nothing), the connection is closed, and
// every recipient gets a temporary local error wrapping the cause; without
// one the message is committed as usual.
func TestFakeServerBeforeEnd(t *testing.T) {
	cause := errors.New("earlier outcome not recorded")
	for _, tc := range []struct {
		name   string
		hook   error
		wantOK bool
	}{
		{"commits", nil, true},
		{"abandons", cause, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotDot bool
			addr, done := fakeServer(t, func(d *dialogue) {
				d.say("220 fake.test ESMTP")
				d.line()
				d.say("250-fake.test", "250 8BITMIME")
				for {
					l := d.line()
					switch {
					case l == "":
						return
					case l == "DATA":
						d.say("354 go")
						for {
							b := d.line()
							if b == "" {
								return // closed (or silent) mid-DATA
							}
							if b == "." {
								gotDot = true
								d.say("250 2.0.0 queued as X")
								break
							}
						}
					case l == "QUIT":
						d.say("221 bye")
						return
					default:
						d.say("250 2.0.0 ok")
					}
				}
			})
			c := mustDial(t, addr, nil)
			called := 0
			env := relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, BeforeEnd: func() error {
				called++
				return tc.hook
			}}
			out, err := c.Send(testContext(t), env, strings.NewReader("body line\r\n"))
			if called != 1 {
				t.Errorf("BeforeEnd called %d times, want 1", called)
			}
			if tc.wantOK {
				if err != nil {
					t.Fatal(err)
				}
				accepted(t, out, 1)
				c.Quit()
				<-done
				if !gotDot {
					t.Error("the server never saw the final dot")
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded although BeforeEnd failed")
			}
			e := asRelayError(t, err)
			if !e.Temporary || !e.Local || !errors.Is(err, cause) {
				t.Errorf("err = %#v, want a temporary local error wrapping the cause", e)
			}
			if out[0].Err == nil || !out[0].Err.Temporary {
				t.Errorf("outcome = %+v, want a temporary error", out[0])
			}
			c.Close()
			<-done
			if gotDot {
				t.Error("the server saw the final dot of an abandoned message")
			}
		})
	}
}
