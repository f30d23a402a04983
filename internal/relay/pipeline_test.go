package relay_test

// The pipelined paths (PIPELINING, RFC 2920; CHUNKING, RFC 3030) against
// a wire-level scripted server: it records every command and body byte it
// received, and answers what each test scripts, including the faults no
// real server stages.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
)

// wireScript scripts a wireServer.
type wireScript struct {
	// ext are the EHLO keywords; nil means PIPELINING, CHUNKING,
	// 8BITMIME, ENHANCEDSTATUSCODES.
	ext []string
	// reply answers a command line (".", for the end of DATA; "BDAT n" or
	// "BDAT n LAST" after its data was read). "" keeps the default reply;
	// "drop" hangs up without one. Lines are joined with CRLF.
	reply func(cmd string) string
}

// wireLog is what a wireServer received: command lines, "[data N]" for a
// DATA body of N bytes (before the "." line) and "[chunk N]" for BDAT
// data; bodies holds each message body as received (DATA unstuffed).
type wireLog struct {
	mu     sync.Mutex
	lines  []string
	bodies []string
}

func (l *wireLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

func (l *wireLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, " | ")
}

var defaultExt = []string{"PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES"}

// wireServer serves one connection with script.
func wireServer(t *testing.T, script wireScript) (addr string, log *wireLog, done <-chan struct{}) {
	t.Helper()
	log = &wireLog{}
	if script.ext == nil {
		script.ext = defaultExt
	}
	addr, done = fakeServer(t, func(d *dialogue) { serveWire(d, script, log) })
	return addr, log, done
}

func serveWire(d *dialogue, script wireScript, log *wireLog) {
	d.say("220 wire.test ESMTP")
	var chunks strings.Builder
	for {
		l := d.line()
		if l == "" {
			return
		}
		log.add(l)
		verb := strings.ToUpper(strings.Fields(l)[0])
		def := "250 2.0.0 ok"
		switch verb {
		case "EHLO":
			lines := []string{"250-wire.test"}
			for _, e := range script.ext {
				lines = append(lines, "250-"+e)
			}
			lines[len(lines)-1] = "250 " + lines[len(lines)-1][4:]
			d.say(lines...)
			continue
		case "DATA":
			def = "354 go ahead"
		case "BDAT":
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			buf := make([]byte, n)
			if _, err := io.ReadFull(d.r, buf); err != nil {
				return
			}
			if n > 0 {
				log.add(fmt.Sprintf("[chunk %d]", n))
			}
			chunks.Write(buf)
			if strings.HasSuffix(strings.ToUpper(l), " LAST") {
				log.bodies = append(log.bodies, chunks.String())
				chunks.Reset()
			}
		case "QUIT":
			d.say("221 bye")
			return
		}
		r := reply(script, l, def)
		if r == "drop" {
			return
		}
		d.say(r)
		if verb == "DATA" && strings.HasPrefix(r, "354") && !readData(d, script, log) {
			return
		}
	}
}

func reply(script wireScript, cmd, def string) string {
	if script.reply != nil {
		if r := script.reply(cmd); r != "" {
			return r
		}
	}
	return def
}

// readData reads a DATA body up to ".", and answers the "."; false when
// the connection ended.
func readData(d *dialogue, script wireScript, log *wireLog) bool {
	var body strings.Builder
	for {
		_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		s, err := d.r.ReadString('\n')
		if err != nil {
			if body.Len() > 0 {
				log.add(fmt.Sprintf("[data %d]", body.Len()))
			}
			return false
		}
		if s == ".\r\n" {
			if body.Len() > 0 {
				log.add(fmt.Sprintf("[data %d]", body.Len()))
			}
			log.add(".")
			log.bodies = append(log.bodies, body.String())
			r := reply(script, ".", "250 2.0.0 queued as Q1")
			if r == "drop" {
				return false
			}
			d.say(r)
			return true
		}
		body.WriteString(strings.TrimPrefix(s, "."))
	}
}

// wireExt returns the EHLO keywords of a mode.
func wireExt(mode string) []string {
	switch mode {
	case "pipelining":
		return []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"}
	case "none":
		return []string{"8BITMIME", "ENHANCEDSTATUSCODES"}
	}
	return defaultExt
}

func TestWireModeChosen(t *testing.T) {
	cases := []struct {
		name   string
		ext    []string
		mutate func(*relay.Options)
		want   string
	}{
		{"pipelining and chunking", defaultExt, nil, "chunking"},
		{"pipelining only", wireExt("pipelining"), nil, "pipelining"},
		{"neither", wireExt("none"), nil, "none"},
		{"chunking without pipelining", []string{"CHUNKING"}, nil, "none"},
		{"NoChunking", defaultExt, func(o *relay.Options) { o.NoChunking = true }, "pipelining"},
		{"NoPipelining", defaultExt, func(o *relay.Options) { o.NoPipelining = true }, "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _ := wireServer(t, wireScript{ext: tc.ext})
			if got := mustDial(t, addr, tc.mutate).Pipelining(); got != tc.want {
				t.Errorf("Pipelining() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestWirePipelinedGroupIsOneWrite holds every reply until the whole
// group (MAIL, RCPTs, RSET of a Verify) has arrived: a client waiting for
// MAIL's reply would stall until its timeout.
func TestWirePipelinedGroupIsOneWrite(t *testing.T) {
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			const last = "RSET"
			var group []string
			addr, done := fakeServer(t, func(d *dialogue) {
				d.say("220 wire.test ESMTP")
				d.line()
				d.say("250-wire.test", "250-"+strings.Join(wireExt(mode), "\r\n250-"), "250 SIZE 1000000")
				for len(group) == 0 || group[len(group)-1] != last {
					l := d.line() // 5 s deadline each
					if l == "" {
						return
					}
					group = append(group, l)
				}
				for range group {
					d.say("250 2.0.0 ok")
				}
			})
			c := mustDial(t, addr, func(o *relay.Options) { o.Timeout = 2 * time.Second })
			out, err := c.Verify(testContext(t), "a@example.org", []string{"b@example.net", "c@example.net"})
			if err != nil {
				t.Fatalf("Verify: %v (server got %q)", err, group)
			}
			accepted(t, out, 2)
			c.Close()
			<-done
		})
	}
}

func TestWirePipelinedFaults(t *testing.T) {
	to := []string{"b@example.net", "c@example.net", "d@example.net"}
	refuseC := func(cmd string) string {
		if cmd == "RCPT TO:<c@example.net>" {
			return "550-5.1.1 no such user\r\n550 5.1.1 really not here"
		}
		return ""
	}
	cases := []struct {
		name  string
		modes []string
		reply func(cmd string) string
		// lost: Send must return an error (connection unusable).
		lost bool
		// want per recipient: "ok", or the reply code of its error.
		want []string
		// wire is the server's log of the message transaction (after EHLO).
		wire string
	}{
		{
			name: "one recipient refused, multi-line reply", modes: []string{"pipelining"}, reply: refuseC,
			want: []string{"ok", "550", "ok"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net> | DATA | [data 7] | .",
		},
		{
			name: "one recipient refused, chunked", modes: []string{"chunking"}, reply: refuseC,
			want: []string{"ok", "550", "ok"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net> | BDAT 7 | [chunk 7] | BDAT 0 LAST",
		},
		{
			name: "MAIL refused: its error for all, not the 503s", modes: []string{"pipelining"},
			reply: func(cmd string) string {
				switch {
				case strings.HasPrefix(cmd, "MAIL"):
					return "451 4.3.0 try later"
				case strings.HasPrefix(cmd, "RCPT"), cmd == "DATA":
					return "503 5.5.1 need MAIL"
				}
				return ""
			},
			want: []string{"451", "451", "451"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net> | DATA",
		},
		{
			name: "MAIL refused, chunked: no BDAT", modes: []string{"chunking"},
			reply: func(cmd string) string {
				switch {
				case strings.HasPrefix(cmd, "MAIL"):
					return "550 5.7.1 sender refused"
				case strings.HasPrefix(cmd, "RCPT"):
					return "503 5.5.1 need MAIL"
				}
				return ""
			},
			want: []string{"550", "550", "550"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net>",
		},
		{
			name: "all refused, DATA still 354: only the dot", modes: []string{"pipelining"},
			reply: func(cmd string) string {
				switch {
				case strings.HasPrefix(cmd, "RCPT"):
					return "550 5.1.1 unknown"
				case cmd == ".":
					return "554 5.5.1 no valid recipients"
				}
				return ""
			},
			want: []string{"550", "550", "550"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net> | DATA | .",
		},
		{
			name: "all refused, chunked: no BDAT", modes: []string{"chunking"},
			reply: func(cmd string) string {
				if strings.HasPrefix(cmd, "RCPT") {
					return "550 5.1.1 unknown"
				}
				return ""
			},
			want: []string{"550", "550", "550"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net>",
		},
		{
			name: "DATA refused goes to the accepted", modes: []string{"pipelining"},
			reply: func(cmd string) string {
				if cmd == "DATA" {
					return "451 4.3.2 not now"
				}
				return refuseC(cmd)
			},
			want: []string{"451", "550", "451"},
			wire: "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<b@example.net> | RCPT TO:<c@example.net> | RCPT TO:<d@example.net> | DATA",
		},
		{
			name: "421 in the middle of the group", modes: []string{"pipelining", "chunking"}, lost: true,
			reply: func(cmd string) string {
				if cmd == "RCPT TO:<c@example.net>" {
					return "421 4.3.2 shutting down"
				}
				return ""
			},
			want: []string{"421", "421", "421"},
		},
		{
			name: "malformed reply", modes: []string{"pipelining", "chunking"}, lost: true,
			reply: func(cmd string) string {
				if cmd == "RCPT TO:<c@example.net>" {
					return "hello there"
				}
				return ""
			},
			want: []string{"0", "0", "0"},
		},
		{
			name: "hang-up after the body, before the reply", modes: []string{"pipelining", "chunking"}, lost: true,
			reply: func(cmd string) string {
				if cmd == "." || cmd == "BDAT 0 LAST" {
					return "drop"
				}
				return ""
			},
			want: []string{"0", "0", "0"},
		},
	}
	for _, tc := range cases {
		for _, mode := range tc.modes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				addr, log, done := wireServer(t, wireScript{ext: wireExt(mode), reply: tc.reply})
				c := mustDial(t, addr, nil)
				out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader("hello\n"))
				if tc.lost != (err != nil) {
					t.Fatalf("Send error = %v, want lost=%v", err, tc.lost)
				}
				checkOutcomes(t, out, to, tc.want)
				c.Close()
				<-done
				if got := transactionLog(log); tc.wire != "" && got != tc.wire {
					t.Errorf("server received\n %s\nwant\n %s", got, tc.wire)
				}
			})
		}
	}
}

// checkOutcomes compares outcomes with "ok" or an error's reply code.
func checkOutcomes(t *testing.T, out []relay.Outcome, to, want []string) {
	t.Helper()
	if len(out) != len(want) {
		t.Fatalf("%d outcomes, want %d", len(out), len(want))
	}
	for i, o := range out {
		got := "ok"
		if o.Err != nil {
			got = strconv.Itoa(o.Err.Code)
		}
		if o.Address != to[i] || got != want[i] {
			t.Errorf("outcome %d: %s %v, want %s %s", i, o.Address, o.Err, to[i], want[i])
		}
	}
}

// transactionLog is the server's log after EHLO, without QUIT.
func transactionLog(l *wireLog) string {
	s := l.String()
	if _, rest, ok := strings.Cut(s, " | "); ok && strings.HasPrefix(s, "EHLO") {
		s = rest
	}
	return strings.TrimSuffix(s, " | QUIT")
}

func TestWireMultiLineRefusalKeepsEnhancedCode(t *testing.T) {
	addr, _, _ := wireServer(t, wireScript{reply: func(cmd string) string {
		if strings.HasPrefix(cmd, "RCPT") {
			return "550-5.1.1 <b@example.net>: no such user\r\n550 5.1.1 see https://postmaster.example"
		}
		return ""
	}})
	c := mustDial(t, addr, nil)
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := out[0].Err
	if e == nil || e.Op != "rcpt" || e.Code != 550 || e.Enhanced != "5.1.1" || e.Temporary ||
		e.Message != "<b@example.net>: no such user\nsee https://postmaster.example" {
		t.Errorf("outcome error %#v, want permanent rcpt 550 5.1.1 with both lines", e)
	}
}

func TestWireBeforeEndFailsNoCommit(t *testing.T) {
	cause := errors.New("archive copy not durable")
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			addr, log, done := wireServer(t, wireScript{ext: wireExt(mode)})
			c := mustDial(t, addr, nil)
			env := relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, BeforeEnd: func() error { return cause }}
			out, err := c.Send(testContext(t), env, strings.NewReader("body\r\n"))
			if err == nil || !errors.Is(err, cause) || out[0].Err == nil || !out[0].Err.Temporary {
				t.Fatalf("Send = %+v, %v; want a temporary error wrapping the cause", out, err)
			}
			<-done
			got := log.String()
			if strings.Contains(got, "LAST") || strings.HasSuffix(got, "| .") || len(log.bodies) != 0 {
				t.Errorf("the commit reached the server: %s", got)
			}
		})
	}
}

func TestWireBodyReadFailsNoCommit(t *testing.T) {
	cause := errors.New("archive: read failed")
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			addr, log, done := wireServer(t, wireScript{ext: wireExt(mode)})
			c := mustDial(t, addr, nil)
			_, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, &failingReader{n: 300 << 10, err: cause})
			if !errors.Is(err, cause) {
				t.Fatalf("err = %v, want it to wrap the body's error", err)
			}
			<-done
			if got := log.String(); strings.Contains(got, "LAST") || len(log.bodies) != 0 {
				t.Errorf("the commit reached the server: %s", got)
			}
		})
	}
}

func TestWireChunkRefusedMidMessage(t *testing.T) {
	var n atomic.Int32
	addr, log, done := wireServer(t, wireScript{reply: func(cmd string) string {
		if strings.HasPrefix(cmd, "BDAT") {
			if n.Add(1) >= 2 {
				return "552 5.3.4 message too big"
			}
		}
		return ""
	}})
	c := mustDial(t, addr, nil)
	body := strings.Repeat(strings.Repeat("y", 98)+"\r\n", 20_000) // 2 MB: 16 chunks
	to := []string{"b@example.net", "c@example.net"}
	out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	checkOutcomes(t, out, to, []string{"552", "552"})
	if out[0].Err.Enhanced != "5.3.4" || out[0].Err.Op != "data" {
		t.Errorf("error %#v, want data 552 5.3.4", out[0].Err)
	}
	// The connection goes on, with RSET first.
	n.Store(-100)
	out, err = c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to[:1]}, strings.NewReader("small\r\n"))
	if err != nil {
		t.Fatalf("second Send: %v", err)
	}
	checkOutcomes(t, out, to[:1], []string{"ok"})
	c.Quit()
	<-done
	got := log.String()
	if chunks := strings.Count(got, "[chunk "); chunks > 2+4+1 {
		t.Errorf("%d chunks sent; a refusal must stop the sending within the window: %s", chunks, got)
	}
	if !strings.Contains(got, "| RSET | MAIL FROM") || strings.Count(got, "LAST") != 1 {
		t.Errorf("want no LAST for the refused message, RSET before the next: %s", got)
	}
}

func TestWireContextCancelledWhileWaiting(t *testing.T) {
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			release := make(chan struct{})
			addr, _, _ := wireServer(t, wireScript{ext: wireExt(mode), reply: func(cmd string) string {
				if strings.HasPrefix(cmd, "RCPT") {
					<-release
				}
				return ""
			}})
			defer close(release)
			c := mustDial(t, addr, func(o *relay.Options) { o.Timeout = 20 * time.Second })
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			out, err := c.Send(ctx, relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader("x\r\n"))
			if !errors.Is(err, context.DeadlineExceeded) || out[0].Err == nil || !out[0].Err.Temporary {
				t.Fatalf("Send = %+v, %v; want a temporary error wrapping the deadline", out, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Send returned after %v", d)
			}
		})
	}
}

func TestWireVerifyPipelined(t *testing.T) {
	addr, log, done := wireServer(t, wireScript{reply: func(cmd string) string {
		if cmd == "RCPT TO:<nobody@example.net>" {
			return "550 5.1.1 unknown"
		}
		return ""
	}})
	c := mustDial(t, addr, nil)
	to := []string{"ok@example.net", "nobody@example.net"}
	out, err := c.Verify(testContext(t), "a@example.org", to)
	if err != nil {
		t.Fatal(err)
	}
	checkOutcomes(t, out, to, []string{"ok", "550"})
	c.Quit()
	<-done
	want := "MAIL FROM:<a@example.org> BODY=8BITMIME | RCPT TO:<ok@example.net> | RCPT TO:<nobody@example.net> | RSET"
	if got := transactionLog(log); got != want {
		t.Errorf("server received %s, want %s", got, want)
	}
}

func TestWireMailParameters(t *testing.T) {
	// The same parameters go-smtp's Mail sends (mirrored by the pipelined
	// path), whatever the mode.
	for _, mode := range []string{"none", "pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			ext := append(wireExt(mode), "SIZE 100000", "SMTPUTF8")
			addr, log, done := wireServer(t, wireScript{ext: ext})
			c := mustDial(t, addr, nil)
			env := relay.Envelope{From: "jörg@example.org", To: []string{"b@example.net"}, Size: 6}
			out, err := c.Send(testContext(t), env, strings.NewReader("hello\n"))
			if err != nil {
				t.Fatal(err)
			}
			checkOutcomes(t, out, env.To, []string{"ok"})
			c.Quit()
			<-done
			if got := log.lines[1]; got != "MAIL FROM:<jörg@example.org> BODY=8BITMIME SIZE=6 SMTPUTF8" {
				t.Errorf("MAIL line %q", got)
			}
			if len(log.bodies) != 1 || log.bodies[0] != "hello\r\n" {
				t.Errorf("bodies %q", log.bodies)
			}
		})
	}
}

func TestWireTranscriptShowsCommandsCountsBody(t *testing.T) {
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			addr, _, done := wireServer(t, wireScript{ext: wireExt(mode)})
			lg, logs := debugLogger()
			c := mustDial(t, addr, func(o *relay.Options) { o.Logger = lg })
			body := "Subject: secret body\r\n\r\n" + strings.Repeat("z", 200<<10) + "\r\n"
			out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			accepted(t, out, 1)
			c.Quit()
			<-done
			tr := logs.String()
			for _, want := range []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "[message data, "} {
				if !strings.Contains(tr, want) {
					t.Errorf("transcript lacks %q:\n%s", want, tr)
				}
			}
			if strings.Contains(tr, "secret body") || strings.Contains(tr, "zzzz") {
				t.Errorf("transcript shows the body:\n%.2000s", tr)
			}
			if mode == "chunking" && (!strings.Contains(tr, "BDAT 131072") || !strings.Contains(tr, "BDAT 0 LAST")) {
				t.Errorf("transcript lacks the BDAT commands:\n%s", tr)
			}
		})
	}
}

func TestWireManyMessagesOneConnection(t *testing.T) {
	// Replies are read exactly: after refusals, chunk refusals and
	// successes, the next transaction's replies still line up.
	for _, mode := range []string{"pipelining", "chunking"} {
		t.Run(mode, func(t *testing.T) {
			rejected := false // the server's own state: no valid recipient
			addr, log, done := wireServer(t, wireScript{ext: wireExt(mode), reply: func(cmd string) string {
				switch {
				case strings.HasPrefix(cmd, "MAIL"):
					rejected = false
				case strings.HasPrefix(cmd, "RCPT TO:<reject"):
					rejected = true
					return "550 5.1.1 unknown"
				case cmd == "DATA" && rejected:
					return "554 5.5.1 no valid recipients"
				}
				return ""
			}})
			c := mustDial(t, addr, nil)
			for i := range 6 {
				to := []string{fmt.Sprintf("u%d@example.net", i)}
				want := "ok"
				if i%3 == 1 {
					to, want = []string{"reject@example.net"}, "550"
				}
				out, err := c.Send(testContext(t), relay.Envelope{From: "a@example.org", To: to}, strings.NewReader(fmt.Sprintf("message %d\r\n", i)))
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				checkOutcomes(t, out, to, []string{want})
			}
			if err := c.Quit(); err != nil {
				t.Errorf("Quit: %v", err)
			}
			<-done
			if len(log.bodies) != 4 || log.bodies[3] != "message 5\r\n" {
				t.Errorf("bodies %q", log.bodies)
			}
			if n := strings.Count(log.String(), "RSET"); n != 2 {
				t.Errorf("%d RSET, want 2 (after each refused message): %s", n, log.String())
			}
		})
	}
}
