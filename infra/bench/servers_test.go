package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// TestSeededMailboxServedExactly checks the generator's promise against a
// real Dovecot: every seeded message is served with exactly Workload.Size
// octets (LIST agrees, W= in the name), and the raw client empties the
// mailbox.
func TestSeededMailboxServedExactly(t *testing.T) {
	s := &testenv.Session{Name: t.Name(), SkipHint: "make bench-compare installs what is needed"}
	t.Cleanup(s.Close)
	var e *env
	if err := testenv.Guard(func() {
		testenv.NeedBinary(t, "dovecot")
		testenv.NeedBinary(t, "smtp-sink", "/usr/sbin/smtp-sink")
		e = newEnv(s, "host", workerConfig{Workdir: t.TempDir(), Timeout: time.Minute})
	}); err != nil {
		t.Fatal(err)
	}
	wl := Workload{Name: "t", Count: 5, Size: 3001}
	if err := e.prepare(Job{Workload: wl, RunID: 1}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := pop3.Dial(ctx, pop3.Options{Addr: e.dove.Addr, TLS: tlsmode.None, AllowPlaintextAuth: true, Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(ctx, benchUser, benchPass); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != wl.Count {
		t.Fatalf("LIST shows %d messages, want %d", len(list), wl.Count)
	}
	for _, m := range list {
		if m.Size != wl.Size {
			t.Errorf("LIST %d: size %d, want %d", m.Num, m.Size, wl.Size)
		}
		body, err := c.Retr(ctx, m.Num)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if _, err := got.ReadFrom(body); err != nil {
			t.Fatal(err)
		}
		body.Close()
		if int64(got.Len()) != wl.Size {
			t.Errorf("RETR %d: %d octets, want %d", m.Num, got.Len(), wl.Size)
		}
	}
	c.Close()

	// The raw client (as `bench raw` runs it) reads and deletes everything.
	if err := rawFetch(e.dove.Addr, benchUser, e.passFile, false, "", ""); err != nil {
		t.Fatal(err)
	}
	if n, err := maildirCount(e.dove.Maildir(benchUser)); err != nil || n != 0 {
		t.Fatalf("%d messages left after the raw client (%v)", n, err)
	}

	// A second prepare starts from an empty maildir without Dovecot's index.
	if err := e.prepare(Job{Workload: wl, RunID: 2}); err != nil {
		t.Fatal(err)
	}
	if n, err := maildirCount(e.dove.Maildir(benchUser)); err != nil || n != wl.Count {
		t.Fatalf("%d messages after re-seeding, want %d (%v)", n, wl.Count, err)
	}
	if m, _ := filepath.Glob(filepath.Join(e.dove.Maildir(benchUser), "dovecot*")); len(m) != 0 {
		t.Errorf("Dovecot index files survived prepare: %v", m)
	}
}

// TestCountingSinkCounts checks that smtp-sink's -c counter, which the
// benchmark trusts instead of dumps, counts each accepted message once.
func TestCountingSinkCounts(t *testing.T) {
	s := &testenv.Session{Name: t.Name(), SkipHint: "make bench-compare installs what is needed"}
	t.Cleanup(s.Close)
	var sink *countingSink
	if err := testenv.Guard(func() { sink = startCountingSink(s, t.TempDir()) }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := relay.Dial(ctx, relay.Options{Addr: sink.Addr, TLS: tlsmode.None, HeloDomain: "bench.example", Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("Subject: count me\r\n\r\nbody\r\n")
	for i := 1; i <= 3; i++ {
		out, err := c.Send(ctx, relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}}, bytes.NewReader(msg))
		if err != nil || out[0].Err != nil {
			t.Fatalf("send %d: %v %v", i, err, out[0].Err)
		}
		n, err := sink.Messages()
		if err != nil {
			t.Fatal(err)
		}
		if n != i {
			t.Fatalf("after %d messages smtp-sink counts %d", i, n)
		}
	}
}

// TestRTTClientsEmptyMailbox runs the pipelined raw client and mpop through
// a delay proxy against a real Dovecot: each reads every message (the raw
// client checks sizes against LIST, mpop's maildir is checked message by
// message) and leaves the mailbox empty.
func TestRTTClientsEmptyMailbox(t *testing.T) {
	s := &testenv.Session{Name: t.Name(), SkipHint: "make bench-compare installs what is needed"}
	t.Cleanup(s.Close)
	var e *env
	if err := testenv.Guard(func() {
		testenv.NeedBinary(t, "dovecot")
		testenv.NeedBinary(t, "smtp-sink", "/usr/sbin/smtp-sink")
		e = newEnv(s, "host", workerConfig{Workdir: t.TempDir(), Timeout: time.Minute, Mpop: "/usr/bin/mpop"})
	}); err != nil {
		t.Fatal(err)
	}
	wl := Workload{Name: "t", Count: 40, Size: 5000}
	for _, useTLS := range []bool{false, true} {
		if err := e.prepare(Job{Workload: wl, RunID: 1}); err != nil {
			t.Fatal(err)
		}
		target := e.dove.Addr
		if useTLS {
			target = e.dove.TLSAddr
		}
		addr, err := e.via(target, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := rawPipelined(addr, benchUser, e.passFile, useTLS, e.dove.CA.CertFile, "localhost", 16); err != nil {
			t.Fatalf("tls=%v: %v", useTLS, err)
		}
		// 40 messages one at a time would take 40 RTTs (400 ms); with 16
		// in flight a handful: login, three windows, DELEs, QUIT.
		if el := time.Since(start); el > 300*time.Millisecond {
			t.Errorf("tls=%v: pipelined fetch of %d messages took %v at a 10 ms RTT", useTLS, wl.Count, el)
		}
		if n, err := maildirCount(e.dove.Maildir(benchUser)); err != nil || n != 0 {
			t.Fatalf("tls=%v: %d messages left after the pipelined raw client (%v)", useTLS, n, err)
		}
	}
	if _, err := os.Stat("/usr/bin/mpop"); err != nil {
		t.Skip("mpop not installed (infra/bench/install.sh)")
	}
	for i, useTLS := range []bool{false, true} {
		res := e.Run(Job{Tool: toolMpop, Workload: wl, TLS: useTLS, RTT: 10 * time.Millisecond, RunID: 10 + i})
		if res.Err != "" {
			t.Fatalf("mpop tls=%v: %s", useTLS, res.Err)
		}
		if res.Stored != wl.Count || res.LeftOnServer != 0 || res.SinkGot != 0 {
			t.Fatalf("mpop tls=%v: stored %d, left %d, sink %d", useTLS, res.Stored, res.LeftOnServer, res.SinkGot)
		}
	}
}

// TestPostfixSinkCounts checks --sink postfix: CHUNKING is offered, and each
// message sent counts once, after discard(8) has had it.
func TestPostfixSinkCounts(t *testing.T) {
	s := &testenv.Session{Name: t.Name(), SkipHint: "make bench-compare installs what is needed"}
	t.Cleanup(s.Close)
	var sink *postfixSink
	if err := testenv.Guard(func() { sink = startPostfixSink(s) }); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", sink.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Read the greeting first: smtpd drops a client that talks before it
	// (an unauthorized pipelining attempt).
	greeting := make([]byte, 512)
	if _, err := conn.Read(greeting); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "EHLO bench.example\r\nQUIT\r\n")
	ehlo, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("%v after %q", err, ehlo)
	}
	if !bytes.Contains(ehlo, []byte("250-CHUNKING")) && !bytes.Contains(ehlo, []byte("250 CHUNKING")) {
		t.Errorf("the Postfix sink does not offer CHUNKING:\n%s", ehlo)
	}
	ctx := context.Background()
	c, err := relay.Dial(ctx, relay.Options{Addr: sink.Addr(), TLS: tlsmode.None, HeloDomain: "bench.example", Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("Subject: count me\r\n\r\nbody\r\n")
	for i := 1; i <= 3; i++ {
		out, err := c.Send(ctx, relay.Envelope{From: "a@example.org", To: []string{benchRcpt}}, bytes.NewReader(msg))
		if err != nil || out[0].Err != nil {
			t.Fatalf("send %d: %v %v", i, err, out[0].Err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := sink.Messages()
			if err != nil {
				t.Fatal(err)
			}
			if n == i {
				break
			}
			if n > i || time.Now().After(deadline) {
				t.Fatalf("after %d messages the Postfix sink counts %d", i, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
