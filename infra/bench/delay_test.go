package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads, and closes its
// sending side when the client closes its own (so half-close is visible
// end to end).
func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.(*net.TCPConn).SetNoDelay(true)
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func startProxy(t testing.TB, target string, rtt time.Duration) *DelayProxy {
	t.Helper()
	p, err := StartDelayProxy(target, rtt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// pingRTTs times n one-byte echoes over one connection.
func pingRTTs(t testing.TB, addr string, n int) []time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 1)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
		if buf[0] != byte(i) {
			t.Fatalf("echo %d came back as %d", i, buf[0])
		}
	}
	return out
}

func medianDuration(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// The RTT through the proxy is its setting plus a little scheduling; the
// upper bound leaves room for a loaded 2-core machine (other test suites
// run beside this one).
func TestDelayProxyRTT(t *testing.T) {
	echo := echoServer(t)
	for _, rtt := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(rtt.String(), func(t *testing.T) {
			p := startProxy(t, echo, rtt)
			got := pingRTTs(t, p.Addr(), 15)
			med := medianDuration(got)
			t.Logf("median %v over %d echoes (min %v)", med, len(got), minDuration(got))
			if minDuration(got) < rtt {
				t.Errorf("an echo took %v, below the RTT %v", minDuration(got), rtt)
			}
			if med > rtt+15*time.Millisecond {
				t.Errorf("median echo %v, want at most %v", med, rtt+15*time.Millisecond)
			}
		})
	}
}

func minDuration(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

// A burst is delayed, not spread out: 16 small writes sent at once come
// back about one RTT later, not 16 RTTs later. This is what separates a
// delivery queue from a sleep per read.
func TestDelayProxyBurstOneRTT(t *testing.T) {
	const rtt = 40 * time.Millisecond
	p := startProxy(t, echoServer(t), rtt)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	var want bytes.Buffer
	for i := 0; i < 16; i++ {
		line := fmt.Sprintf("RETR %d\r\n", i+1)
		want.WriteString(line)
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // separate reads at the proxy
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("burst came back as %q", got)
	}
	if el < rtt || el > 2*rtt+30*time.Millisecond {
		t.Fatalf("16 writes took %v through a %v proxy; want about one RTT plus the 16 ms of writing", el, rtt)
	}
}

// A 10 MB stream passes unchanged in both directions, and the half-close
// after it reaches the server, whose own close comes back.
func TestDelayProxyStreamUnchanged(t *testing.T) {
	p := startProxy(t, echoServer(t), 5*time.Millisecond)
	data := make([]byte, 10_000_000)
	rand.Read(data)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		// Uneven writes, so chunk boundaries fall everywhere.
		rest := data
		for n := 1; len(rest) > 0; n = n*7%65521 + 1 {
			k := min(n, len(rest))
			if _, err := c.Write(rest[:k]); err != nil {
				errc <- err
				return
			}
			rest = rest[k:]
		}
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c) // ends only when the server's FIN comes through
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("got %d octets back (digest %x), want %d (%x)", n, h.Sum(nil), len(data), want)
	}
}

// Many connections at once each get their own bytes back, and the proxy's
// goroutines are gone after Close.
func TestDelayProxyParallel(t *testing.T) {
	echo := echoServer(t)
	before := runtime.NumGoroutine()
	p, err := StartDelayProxy(echo, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const conns = 64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoOnce(p.Addr(), bytes.Repeat([]byte{byte(i)}, 100_000+i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// A connection left open is closed by Close.
	idle, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	pingOver(t, idle)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection through the proxy survived Close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+1 && time.Now().Before(deadline) { // +1: the echo server's idle handler
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before+1 {
		t.Fatalf("%d goroutines after Close, %d before the proxy", g, before)
	}
}

func pingOver(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
}

func echoOnce(addr string, data []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%d octets back, want %d (first octet %d)", len(got), len(data), data[0])
	}
	return nil
}

// A server that closes at once (a refusal) closes the client's side too.
func TestDelayProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := startProxy(t, addr, 2*time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded through a proxy whose target is down")
	}
}

// The proxy's own cost on loopback: go test -bench DelayProxy -run '^$'.
// direct is the same echo without the proxy.
func BenchmarkDelayProxyStream(b *testing.B) {
	echo := echoServer(b)
	data := make([]byte, 8<<20)
	for _, via := range []string{"direct", "proxy"} {
		b.Run(via, func(b *testing.B) {
			addr := echo
			if via == "proxy" {
				addr = startProxy(b, echo, 0).Addr()
			}
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if err := echoOnce(addr, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDelayProxyRoundTrip(b *testing.B) {
	echo := echoServer(b)
	for _, via := range []string{"direct", "proxy"} {
		b.Run(via, func(b *testing.B) {
			addr := echo
			if via == "proxy" {
				addr = startProxy(b, echo, 0).Addr()
			}
			b.ResetTimer()
			rtts := pingRTTs(b, addr, b.N)
			b.ReportMetric(float64(medianDuration(rtts).Microseconds()), "median-µs")
		})
	}
}
