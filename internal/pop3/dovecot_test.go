package pop3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gopop3 "github.com/knadh/go-pop3"

	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// Integration tests against a real Dovecot started by internal/testenv.
// They skip when Dovecot is not installed, and fail then under CI=true or
// POPCONN_INTEGRATION=1.

// served is what Dovecot sends for a stored message (see testenv.Dovecot):
// every LF not preceded by CR becomes CRLF, and a message not ending in a
// line break gets CRLF appended.
func served(stored []byte) []byte {
	var out []byte
	for i, c := range stored {
		if c == '\n' && (i == 0 || stored[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// testMessages covers what a mailbox holds in practice and the encodings
// that stress dot-stuffing and line handling.
func testMessages() map[string][]byte {
	long := strings.Repeat("L", 100_000) // one line longer than 64 KiB
	return map[string][]byte{
		"crlf-plain":       []byte("From: a@example.org\r\nTo: alice@example.org\r\nSubject: hello\r\n\r\nHello Alice.\r\n"),
		"lf-only":          []byte("From: a@example.org\nSubject: unix line ends\n\nbody line\n"),
		"dots":             []byte("Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nmiddle . dot\r\n. \r\n"),
		"no-final-newline": []byte("Subject: no newline\r\n\r\nlast line without CRLF"),
		"long-line":        []byte("Subject: long\r\n\r\n" + long + "\r\n." + long + "\r\n"),
		"8bit-nul":         []byte("Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa4\xc3\xb6\xc3\xbc\r\nNUL \x00 byte\r\n\xff\xfe\r\n"),
		"bare-cr":          []byte("Subject: bare CR\r\n\r\nbefore\rafter\r\n\r.dot after CR\r\n"),
		"mixed-endings":    []byte("Subject: mixed\r\n\r\ncrlf\r\nlf\n.dot after lf\ncrlf again\r\n"),
		"empty-body":       []byte("Subject: empty body\r\n\r\n"),
	}
}

func TestDovecot(t *testing.T) {
	users := map[string]string{}
	for _, u := range []string{"tls", "stls", "badcert", "badpw", "plain", "exact", "dele", "rollback", "pipeline", "drain", "diff", "userpass", "pipelined"} {
		users[u] = "pw-" + u + "-Secret"
	}
	d := testenv.StartDovecot(t, testenv.DovecotOptions{
		Users: users,
		// No growing delay after failed logins from 127.0.0.1 (Dovecot's
		// auth penalty), so the failure tests do not slow the others.
		ExtraConf: "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n",
	})
	ctx := context.Background()
	tlsConf := &tls.Config{RootCAs: d.CA.Pool}

	login := func(t *testing.T, user string) *Client {
		t.Helper()
		c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: tlsConf, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Auth(ctx, user, users[user]); err != nil {
			t.Fatalf("Auth: %v", err)
		}
		return c
	}

	t.Run("implicit TLS verified with CA pool", func(t *testing.T) {
		for _, name := range []string{"", "localhost"} {
			c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: tlsConf, ServerName: name, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatalf("Dial (ServerName %q): %v", name, err)
			}
			st, ok := c.TLSConnectionState()
			if !ok || !st.HandshakeComplete || len(st.VerifiedChains) == 0 {
				t.Fatalf("TLS state %v, verified chains %d", ok, len(st.VerifiedChains))
			}
			if err := c.Auth(ctx, "tls", users["tls"]); err != nil {
				t.Fatalf("Auth: %v", err)
			}
			if n, _, err := c.Stat(ctx); err != nil || n != 0 {
				t.Fatalf("Stat = %d, %v", n, err)
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("STLS", func(t *testing.T) {
		c, err := Dial(ctx, Options{Addr: d.Addr, TLS: tlsmode.StartTLS, TLSConfig: tlsConf, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		if _, ok := c.TLSConnectionState(); !ok {
			t.Fatal("not encrypted after STLS")
		}
		caps := c.Capabilities()
		if _, ok := caps["STLS"]; ok {
			t.Errorf("capabilities not re-read after STLS (still lists STLS): %v", caps)
		}
		if !c.hasCapa("SASL", "PLAIN") {
			t.Errorf("capabilities after STLS lack SASL PLAIN: %v", caps)
		}
		// Encrypted, so AllowPlaintextAuth is not needed.
		if err := c.Auth(ctx, "stls", users["stls"]); err != nil {
			t.Fatalf("Auth: %v", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("certificate not trusted", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			opts Options
		}{
			{"implicit without CA", Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, Timeout: 10 * time.Second}},
			{"STLS without CA", Options{Addr: d.Addr, TLS: tlsmode.StartTLS, Timeout: 10 * time.Second}},
			{"wrong server name", Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: tlsConf, ServerName: "mail.example.org", Timeout: 10 * time.Second}},
		} {
			c, err := Dial(ctx, tc.opts)
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("%s: Dial = %v, want *tls.CertificateVerificationError", tc.name, err)
			}
			var uae x509.UnknownAuthorityError
			var hne x509.HostnameError
			if !errors.As(err, &uae) && !errors.As(err, &hne) {
				t.Errorf("%s: unexpected verification error %v", tc.name, err)
			}
		}
	})

	t.Run("plaintext auth", func(t *testing.T) {
		c, err := Dial(ctx, Options{Addr: d.Addr, TLS: tlsmode.None, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(ctx, "plain", users["plain"]); !errors.Is(err, ErrPlaintextRefused) {
			t.Fatalf("Auth without TLS = %v, want ErrPlaintextRefused", err)
		}
		c.Close()
		c, err = Dial(ctx, Options{Addr: d.Addr, TLS: tlsmode.None, AllowPlaintextAuth: true, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(ctx, "plain", users["plain"]); err != nil {
			t.Fatalf("Auth with AllowPlaintextAuth: %v", err)
		}
	})

	t.Run("LIST UIDL RETR byte-exact", func(t *testing.T) {
		msgs := testMessages()
		want := map[string][]byte{}  // UIDL -> served bytes
		names := map[string]string{} // UIDL -> test message name
		for name, m := range msgs {
			uid := d.Deliver(t, "exact", m)
			want[uid] = served(m)
			names[uid] = name
		}
		c := login(t, "exact")
		all, err := c.ListAll(ctx)
		if err != nil {
			t.Fatalf("ListAll: %v", err)
		}
		if len(all) != len(msgs) {
			t.Fatalf("ListAll returned %d messages, want %d", len(all), len(msgs))
		}
		list, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		uidl, err := c.UIDL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, mi := range all {
			if list[i].Size != mi.Size || uidl[i].UID != mi.UID || mi.Num != i+1 {
				t.Errorf("ListAll[%d] = %+v, LIST %+v, UIDL %+v", i, mi, list[i], uidl[i])
			}
			exp, ok := want[mi.UID]
			if !ok {
				t.Fatalf("UIDL %q is not a delivered file name", mi.UID)
			}
			got := retrAll(t, c, mi.Num)
			if !bytes.Equal(got, exp) {
				t.Errorf("RETR %d (%s): got %q, want %q", mi.Num, mi.UID, abbrev(got), abbrev(exp))
			}
			// Dovecot's LIST size counts CRLF line ends but not the CRLF it
			// appends to a message without a final line break.
			wantSize := int64(len(got))
			if stored := msgs[names[mi.UID]]; len(stored) > 0 && stored[len(stored)-1] != '\n' {
				wantSize -= 2
			}
			if mi.Size != wantSize {
				t.Errorf("RETR %d (%s): LIST size %d, received %d bytes", mi.Num, names[mi.UID], mi.Size, len(got))
			}
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DELE and QUIT removes", func(t *testing.T) {
		keep := d.Deliver(t, "dele", []byte("Subject: keep\r\n\r\nk\r\n"))
		d.Deliver(t, "dele", []byte("Subject: remove\r\n\r\nr\r\n"))
		c := login(t, "dele")
		if err := c.Dele(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatalf("Quit: %v", err)
		}
		if n := d.Count(t, "dele"); n != 1 {
			t.Fatalf("%d messages in maildir after DELE+QUIT, want 1", n)
		}
		c = login(t, "dele")
		got, err := c.UIDL(ctx)
		if err != nil || len(got) != 1 || got[0].UID != keep {
			t.Fatalf("UIDL after DELE+QUIT = %+v, %v; want only %s", got, err, keep)
		}
	})

	t.Run("DELE then Close keeps", func(t *testing.T) {
		d.Deliver(t, "rollback", []byte("Subject: one\r\n\r\n1\r\n"))
		d.Deliver(t, "rollback", []byte("Subject: two\r\n\r\n2\r\n"))
		c := login(t, "rollback")
		if err := c.Dele(ctx, 1, 2); err != nil {
			t.Fatal(err)
		}
		if n, _, err := c.Stat(ctx); err != nil || n != 0 {
			t.Fatalf("Stat after DELE = %d, %v; want 0 (marked)", n, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		// Dovecot notices the disconnect asynchronously; a new session must
		// still see both messages (RFC 1939 §6: no UPDATE without QUIT).
		c = login(t, "rollback")
		if n, _, err := c.Stat(ctx); err != nil || n != 2 {
			t.Fatalf("Stat in new session = %d, %v; want 2", n, err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
		if n := d.Count(t, "rollback"); n != 2 {
			t.Fatalf("%d messages in maildir, want 2", n)
		}
	})

	t.Run("pipelined DELE of more than one window", func(t *testing.T) {
		const n = deleWindow + 20
		for i := 0; i < n; i++ {
			d.Deliver(t, "pipeline", fmt.Appendf(nil, "Subject: %d\r\n\r\nbody %d\r\n", i, i))
		}
		c := login(t, "pipeline")
		if !c.hasCapa("PIPELINING", "") {
			t.Fatalf("Dovecot does not advertise PIPELINING: %v", c.Capabilities())
		}
		nums := make([]int, n)
		for i := range nums {
			nums[i] = i + 1
		}
		if err := c.Dele(ctx, nums...); err != nil {
			t.Fatalf("Dele: %v", err)
		}
		// Deleting an already deleted message is a -ERR naming it.
		err := c.Dele(ctx, 3)
		var e *Error
		if !errors.As(err, &e) || e.Command != "DELE 3" {
			t.Fatalf("second DELE 3 = %v, want *Error for DELE 3", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatal(err)
		}
		if got := d.Count(t, "pipeline"); got != 0 {
			t.Fatalf("%d messages left, want 0", got)
		}
	})

	t.Run("pipelined RETR equals Retr", func(t *testing.T) {
		// 200 messages of mixed sizes: the random ones of the scripted
		// tests (Dovecot stores them with LF turned to CRLF on the way
		// out), the edge cases of testMessages, and a few large ones.
		stored := randomMessages(180, 3)
		for _, m := range testMessages() {
			stored = append(stored, m)
		}
		for i := 0; len(stored) < 200; i++ {
			stored = append(stored, benchMessage(100_000+i*150_000))
		}
		byUID := map[string][]byte{}
		for _, m := range stored {
			byUID[d.Deliver(t, "pipelined", m)] = served(m)
		}
		c := login(t, "pipelined")
		if !c.Pipelining() {
			t.Fatalf("Dovecot does not advertise PIPELINING: %v", c.Capabilities())
		}
		all, err := c.ListAll(ctx)
		if err != nil || len(all) != len(stored) {
			t.Fatalf("ListAll = %d messages, %v; want %d", len(all), err, len(stored))
		}
		nums := make([]int, len(all))
		oneByOne := make([][]byte, len(all))
		for i, mi := range all {
			nums[i] = mi.Num
			oneByOne[i] = retrAll(t, c, mi.Num)
			if !bytes.Equal(oneByOne[i], byUID[mi.UID]) {
				t.Fatalf("Retr %d differs from the served form of the stored message", mi.Num)
			}
		}
		for _, depth := range []int{16, 3} {
			start := time.Now()
			got := drainQueue(t, c.RetrPipelined(ctx, nums, depth))
			if len(got) != len(nums) {
				t.Fatalf("depth %d: %d messages, want %d", depth, len(got), len(nums))
			}
			for i, f := range got {
				if f.num != nums[i] || f.err != nil || !bytes.Equal(f.body, oneByOne[i]) {
					t.Fatalf("depth %d, RETR %d: %v, %q; Retr gave %q", depth, f.num, f.err, abbrev(f.body), abbrev(oneByOne[i]))
				}
			}
			t.Logf("depth %d: %d messages in %v", depth, len(got), time.Since(start))
		}
		// A -ERR inside the queue: Dovecot answers in order and goes on.
		if err := c.Dele(ctx, 2); err != nil {
			t.Fatal(err)
		}
		got := drainQueue(t, c.RetrPipelined(ctx, []int{1, 2, 3}, 16))
		var e *Error
		if len(got) != 3 || !bytes.Equal(got[0].body, oneByOne[0]) || !errors.As(got[1].err, &e) || e.Command != "RETR 2" || !bytes.Equal(got[2].body, oneByOne[2]) {
			t.Fatalf("queue over a deleted message = %+v", got)
		}
		// Abandoned with commands in flight: Close drains, QUIT commits.
		q := c.RetrPipelined(ctx, nums[10:40], 16)
		if _, body, err := q.Next(ctx); err != nil {
			t.Fatal(err)
		} else if _, err := io.CopyN(io.Discard, body, 10); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(ctx); err != nil {
			t.Fatalf("RetrQueue.Close: %v", err)
		}
		if err := c.Quit(ctx); err != nil {
			t.Fatalf("Quit after the drained queue: %v", err)
		}
		if n := d.Count(t, "pipelined"); n != len(stored)-1 {
			t.Fatalf("%d messages left, want %d", n, len(stored)-1)
		}
	})

	t.Run("partial read then Close continues session", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789 line of a large message\r\n"), 100_000) // 3.6 MB
		d.Deliver(t, "drain", big)
		d.Deliver(t, "drain", []byte("Subject: small\r\n\r\nsmall\r\n"))
		c := login(t, "drain")
		rc, err := c.Retr(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, rc, 1000); err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := retrAll(t, c, 2); string(got) != "Subject: small\r\n\r\nsmall\r\n" {
			t.Fatalf("next RETR = %q", got)
		}
	})

	t.Run("differential against knadh/go-pop3", func(t *testing.T) {
		msgs := testMessages()
		names := map[string]string{} // UIDL -> test message name
		for name, m := range msgs {
			names[d.Deliver(t, "diff", m)] = name
		}
		ours := login(t, "diff")
		all, err := ours.ListAll(ctx)
		if err != nil {
			t.Fatal(err)
		}

		ref := gopop3.New(gopop3.Opt{Host: "127.0.0.1", Dialer: tlsDialer{conf: tlsConf, addr: d.TLSAddr}})
		rc, err := ref.NewConn()
		if err != nil {
			t.Fatalf("go-pop3 connect: %v", err)
		}
		defer rc.Quit()
		if err := rc.Auth("diff", users["diff"]); err != nil {
			t.Fatalf("go-pop3 auth: %v", err)
		}
		refUIDs, err := rc.Uidl(0)
		if err != nil {
			t.Fatal(err)
		}
		for i, mi := range all {
			if refUIDs[i].ID != mi.Num || refUIDs[i].UID != mi.UID {
				t.Errorf("UIDL differs: go-pop3 %+v, ours %+v", refUIDs[i], mi)
			}
			got := retrAll(t, ours, mi.Num)
			buf, err := rc.RetrRaw(mi.Num)
			if err != nil {
				t.Fatalf("go-pop3 RetrRaw %d: %v", mi.Num, err)
			}
			name := names[mi.UID]
			if !bytes.Equal(got, buf.Bytes()) {
				t.Errorf("%s: ours %q, go-pop3 %q", name, abbrev(got), abbrev(buf.Bytes()))
			}
			if !bytes.Equal(got, served(msgs[name])) {
				t.Errorf("%s: ours differs from the served form of the stored message", name)
			}
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		const wrong = "Wrong-Password-42"
		c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: tlsConf, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Auth(ctx, "badpw", wrong)
		var e *Error
		if !errors.Is(err, ErrAuth) || !errors.As(err, &e) || e.Temporary() {
			t.Fatalf("Auth = %v, want permanent *Error matching ErrAuth", err)
		}
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), users["badpw"]) {
			t.Errorf("error text contains a password: %v", err)
		}
		t.Logf("Dovecot rejection: %v (code %q)", err, e.Code)
	})

	t.Run("USER/PASS fallback", func(t *testing.T) {
		// Dovecot always offers SASL PLAIN (its USER/PASS needs the PLAIN
		// mechanism); hide it so Auth takes the RFC 1939 §7 path.
		d.Deliver(t, "userpass", []byte("Subject: hi\n\nhello\n"))
		for _, pw := range []string{users["userpass"], "wrong-one"} {
			c, err := Dial(ctx, Options{Addr: d.TLSAddr, TLS: tlsmode.Implicit, TLSConfig: tlsConf, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			delete(c.caps, "SASL")
			err = c.Auth(ctx, "userpass", pw)
			if pw == "wrong-one" {
				var e *Error
				if !errors.Is(err, ErrAuth) || !errors.As(err, &e) || e.Command != "PASS ***" {
					t.Fatalf("USER/PASS with wrong password = %v, want ErrAuth from PASS", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("USER/PASS: %v", err)
			}
			if got := retrAll(t, c, 1); string(got) != "Subject: hi\r\n\r\nhello\r\n" {
				t.Fatalf("RETR = %q", got)
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// tlsDialer lets go-pop3 (which only takes a host and InsecureSkipVerify)
// verify against the test CA; it always dials addr.
type tlsDialer struct {
	conf *tls.Config
	addr string
}

func (t tlsDialer) Dial(network, _ string) (net.Conn, error) {
	conf := t.conf.Clone()
	conf.ServerName = "127.0.0.1"
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, network, t.addr, conf)
}
