package relay_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
	"github.com/popconnector/popconnector/internal/tlsmode"
)

// BenchmarkSendSizes relays messages of the connector benchmark's shapes
// (4 KiB for the per-message cost; infra/bench: 20 kB and 1 MB, 76-octet base64-alphabet lines, one line in
// 50 starting with a dot so dot-stuffing has work) over one connection to
// the scripted server. MB/s here is the relay's per-byte cost (dot-stuffing,
// buffering, socket writes) plus the in-process server's reading; the
// per-message cost of MAIL, RCPT, DATA round trips dominates the small size.
// B/op counts the in-process server too, which keeps each message it reads.
func BenchmarkSendSizes(b *testing.B) {
	srv := testenv.StartScriptedSMTP(b, testenv.SMTPScript{})
	c, err := relay.Dial(b.Context(), relay.Options{Addr: srv.Addr, TLS: tlsmode.None, HeloDomain: "bench.example", Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{4_096, 20_000, 1_000_000} {
		msg := benchBody(size)
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			env := relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, Size: int64(len(msg))}
			r := bytes.NewReader(msg)
			ctx := b.Context()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(msg)
				out, err := c.Send(ctx, env, r)
				if err != nil || out[0].Err != nil {
					b.Fatalf("Send: %v %v", err, out[0].Err)
				}
			}
		})
	}
}

func benchBody(size int) []byte {
	msg := []byte("From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: bench\r\n\r\n")
	line := strings.Repeat("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 2)[:76] + "\r\n"
	for i := 0; len(msg) < size; i++ {
		if i%50 == 49 {
			msg = append(msg, '.')
			msg = append(msg, line[1:]...)
			continue
		}
		msg = append(msg, line...)
	}
	msg = msg[:size-2]
	return append(msg, "\r\n"...)
}

// BenchmarkSendAt20msRTT relays 4 KiB messages to one recipient over one
// connection through a proxy adding 10 ms each way (20 ms RTT), on each
// path: go-smtp one command at a time (NoPipelining), PIPELINING with DATA
// (NoChunking), and PIPELINING with CHUNKING. msg/s is the figure to
// compare; round trips, not bytes, decide it.
func BenchmarkSendAt20msRTT(b *testing.B) {
	srv := testenv.StartScriptedSMTP(b, testenv.SMTPScript{})
	addr := pop3test.Delay(b, srv.Addr, 10*time.Millisecond) // a plain TCP delay proxy
	msg := benchBody(4_096)
	for _, p := range pathOptions {
		b.Run(p.mode, func(b *testing.B) {
			opts := relay.Options{Addr: addr, TLS: tlsmode.None, HeloDomain: "bench.example", Timeout: 10 * time.Second}
			if p.mutate != nil {
				p.mutate(&opts)
			}
			c, err := relay.Dial(b.Context(), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			env := relay.Envelope{From: "a@example.org", To: []string{"b@example.net"}, Size: int64(len(msg))}
			r := bytes.NewReader(msg)
			for b.Loop() {
				r.Reset(msg)
				out, err := c.Send(b.Context(), env, r)
				if err != nil || out[0].Err != nil {
					b.Fatalf("Send: %v %v", err, out[0].Err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
