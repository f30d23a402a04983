package pop3

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/tlsmode"
)

// FuzzServerReplies runs the client against a server that answers every
// command with fuzzed bytes: whatever a broken or hostile server sends,
// the client must not panic, hang past its deadlines, return a listing
// with impossible entries, or a pipelined RETR queue with more or fewer
// results than messages asked for, or a body longer than what was sent.
func FuzzServerReplies(f *testing.F) {
	for _, s := range []string{
		"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK 2\r\n1 100\r\n2 200\r\n.\r\n+OK\r\n1 abc\r\n2 def\r\n.\r\n+OK bye\r\n",
		"-ERR no CAPA\r\n+OK\r\n1 5\r\n.\r\n-ERR [SYS/TEMP] no UIDL\r\n",
		"+OK\r\n.\r\n+OK\r\n1 -5\r\n.\r\n",
		"+OK\r\n.\r\n+OK\r\n1 10\r\n1 10\r\n.\r\n+OK\r\n1 a b\r\n.\r\n",
		"garbage\r\n",
		"+OK\r\n" + string(make([]byte, 5000)) + "\r\n",
		"+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK\r\n1 5\r\n.\r\n+OK\r\n1 a\r\n.\r\n" +
			"+OK\r\nbody\r\n.\r\n-ERR [SYS/TEMP] no\r\n+OK\r\n..x\r\n.\r\n+OK bye\r\n",
		"+OK\r\nPIPELINING\r\n.\r\n-ERR\r\n-ERR\r\n+OK\r\npartial",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Skip(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("+OK fuzz server ready\r\n"))
			c.Write(script)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cl, err := Dial(ctx, Options{Addr: ln.Addr().String(), TLS: tlsmode.None, Timeout: 500 * time.Millisecond})
		if err != nil {
			return
		}
		defer cl.Close()
		msgs, err := cl.ListAll(ctx)
		if err == nil {
			for _, m := range msgs {
				if m.Num <= 0 || m.Size < 0 || !validUID(m.UID) {
					t.Fatalf("impossible listing entry %+v", m)
				}
			}
		}
		q := cl.RetrPipelined(ctx, []int{1, 2, 3}, 2)
		for i := 0; ; i++ {
			_, body, err := q.Next(ctx)
			if err == io.EOF {
				if i != 3 {
					t.Fatalf("queue of 3 ended after %d", i)
				}
				break
			}
			if i >= 3 {
				t.Fatalf("queue of 3 gave a fourth result")
			}
			if err != nil {
				continue
			}
			if n, _ := io.Copy(io.Discard, body); n > int64(len(script)) {
				t.Fatalf("body of %d bytes from a script of %d", n, len(script))
			}
			body.Close()
		}
		q.Close(ctx)
		cl.Quit(ctx)
	})
}
