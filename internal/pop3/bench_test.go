package pop3

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gopop3 "github.com/knadh/go-pop3"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
)

// benchMessage builds a message of about size bytes shaped like real mail:
// headers, then base64 lines of 76 characters with CRLF, every 50th line
// starting with "." so that dot-stuffing is exercised.
func benchMessage(size int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	b.Grow(size + 200)
	b.WriteString("From: bench@example.org\r\nTo: alice@example.org\r\nSubject: benchmark\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	raw := make([]byte, 57) // 57 bytes encode to 76 base64 characters
	line := make([]byte, 76)
	for i := 0; b.Len() < size; i++ {
		for j := range raw {
			raw[j] = byte(rng.Uint32())
		}
		base64.StdEncoding.Encode(line, raw)
		if i%50 == 0 {
			line[0] = '.'
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// benchServer serves msg from an in-process Mailbox whose wire encoding is
// computed before the benchmark, so the server allocates nothing per RETR.
func benchServer(b *testing.B, msg []byte) *pop3test.Server {
	mb := &pop3test.Mailbox{User: "bench", Pass: "pw", Messages: [][]byte{msg}}
	mb.Prepare()
	return pop3test.NewServer(b, mb.Serve)
}

func benchClient(b *testing.B, addr string) *Client {
	c, err := Dial(context.Background(), plainOpts(addr))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Auth(context.Background(), "bench", "pw"); err != nil {
		b.Fatal(err)
	}
	return c
}

// readRetr reads message 1 through our client into buf-sized chunks and
// returns the byte count.
func readRetr(c *Client, buf []byte) (int64, error) {
	rc, err := c.Retr(context.Background(), 1)
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		k, err := rc.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, rc.Close()
		}
		if err != nil {
			return n, err
		}
	}
}

// BenchmarkRetr measures streaming RETR throughput and allocation per
// message over loopback.
func BenchmarkRetr(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20, 20 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			msg := benchMessage(size)
			srv := benchServer(b, msg)
			c := benchClient(b, srv.Addr)
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				n, err := readRetr(c, buf)
				if err != nil || n != int64(len(msg)) {
					b.Fatalf("read %d bytes, %v; want %d", n, err, len(msg))
				}
			}
		})
	}
}

// BenchmarkRetrMemory compares the heap needed to read one ~20 MB message
// through Retr (streamed to a 32 KiB buffer) and through knadh/go-pop3
// v1.0.2 RetrRaw (which returns the whole message in a bytes.Buffer).
//
// peak-heap-B is the highest live heap seen during the transfer, sampled
// every 100µs from runtime/metrics, minus the live heap after a GC just
// before it; B/op is everything allocated. The server is in-process but
// serves a pre-encoded buffer, so it adds nothing per operation.
func BenchmarkRetrMemory(b *testing.B) {
	msg := benchMessage(20 << 20)
	srv := benchServer(b, msg)

	b.Run("pop3.Retr", func(b *testing.B) {
		c := benchClient(b, srv.Addr)
		buf := make([]byte, 32<<10)
		measurePeakHeap(b, int64(len(msg)), func() (int64, error) { return readRetr(c, buf) })
	})

	b.Run("go-pop3.RetrRaw", func(b *testing.B) {
		host, port, _ := net.SplitHostPort(srv.Addr)
		p, _ := strconv.Atoi(port)
		conn, err := gopop3.New(gopop3.Opt{Host: host, Port: p}).NewConn()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Quit() })
		if err := conn.Auth("bench", "pw"); err != nil {
			b.Fatal(err)
		}
		measurePeakHeap(b, int64(len(msg)), func() (int64, error) {
			buf, err := conn.RetrRaw(1)
			if err != nil {
				return 0, err
			}
			return int64(buf.Len()), nil
		})
	})
}

// measurePeakHeap runs op b.N times and reports the peak live-heap growth
// over all runs as peak-heap-B.
func measurePeakHeap(b *testing.B, want int64, op func() (int64, error)) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() int64 {
		metrics.Read(samples)
		return int64(samples[0].Value.Uint64())
	}
	var peakGrowth int64
	b.SetBytes(want)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		base := heap()
		var peak atomic.Int64
		peak.Store(base)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(100 * time.Microsecond)
			defer t.Stop()
			for {
				if h := heap(); h > peak.Load() {
					peak.Store(h)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		b.StartTimer()
		n, err := op()
		b.StopTimer()
		if h := heap(); h > peak.Load() {
			peak.Store(h)
		}
		close(stop)
		wg.Wait()
		if err != nil || n != want {
			b.Fatalf("read %d bytes, %v; want %d", n, err, want)
		}
		peakGrowth = max(peakGrowth, peak.Load()-base)
		b.StartTimer()
	}
	b.ReportMetric(float64(peakGrowth), "peak-heap-B")
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkRetrPipelined fetches 200 messages of 20 KB through a proxy
// that delays each direction by half the round trip: one Retr at a time
// against RetrPipelined at several depths. msg/s is messages per second.
// The server and the proxy run in the process: with a delay, B/op counts
// the proxy's copy of every byte as well.
func BenchmarkRetrPipelined(b *testing.B) {
	const count, size = 200, 20 << 10
	msgs := make([][]byte, count)
	for i := range msgs {
		msgs[i] = benchMessage(size)
	}
	mb := &pop3test.Mailbox{User: "bench", Pass: "pw", Messages: msgs}
	mb.Prepare()
	srv := pop3test.NewServer(b, mb.Serve)
	nums := make([]int, count)
	for i := range nums {
		nums[i] = i + 1
	}
	for _, rtt := range []time.Duration{0, 20 * time.Millisecond} {
		addr := srv.Addr
		if rtt > 0 {
			addr = pop3test.Delay(b, srv.Addr, rtt/2)
		}
		for _, depth := range []int{0, 1, 4, 16} {
			name := fmt.Sprintf("rtt=%v/depth=%d", rtt, depth)
			if depth == 0 {
				name = fmt.Sprintf("rtt=%v/Retr", rtt)
			}
			b.Run(name, func(b *testing.B) {
				c := benchClient(b, addr)
				buf := make([]byte, 32<<10)
				b.SetBytes(int64(count * len(msgs[0])))
				b.ReportAllocs()
				for b.Loop() {
					if depth == 0 {
						for _, n := range nums {
							rc, err := c.Retr(context.Background(), n)
							if err != nil {
								b.Fatal(err)
							}
							if _, err := io.CopyBuffer(io.Discard, rc, buf); err != nil {
								b.Fatal(err)
							}
						}
						continue
					}
					q := c.RetrPipelined(context.Background(), nums, depth)
					for {
						_, body, err := q.Next(context.Background())
						if err == io.EOF {
							break
						}
						if err != nil {
							b.Fatal(err)
						}
						if _, err := io.CopyBuffer(io.Discard, body, buf); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(count*b.N)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	}
}
