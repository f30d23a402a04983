package relay_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"hash"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// generator yields a message of exactly size bytes with CRLF lines of 78
// characters (every 50th starting with a dot, to keep dot-stuffing busy),
// hashing what it yields. It holds one line, never the message.
type generator struct {
	size, done int64
	line       int
	lines      [][]byte // one per letter, plus a dotted variant at the end
	pending    []byte
	sum        hash.Hash
}

const genHeader = "From: big@example.org\r\nTo: rcpt@example.net\r\nSubject: large message\r\n\r\n"

// newGenerator makes a generator of about size bytes, rounded down to whole
// lines so that the message ends in CRLF (and so arrives byte-exact).
func newGenerator(size int64) *generator {
	body := size - int64(len(genHeader))
	g := &generator{size: int64(len(genHeader)) + body - body%78, sum: sha256.New()}
	g.pending = []byte(genHeader)
	for c := 'a'; c <= 'z'; c++ {
		g.lines = append(g.lines, []byte(strings.Repeat(string(c), 76)+"\r\n"))
	}
	g.lines = append(g.lines, []byte("."+strings.Repeat("z", 75)+"\r\n"))
	return g
}

func (g *generator) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && g.done < g.size {
		if len(g.pending) == 0 {
			g.line++
			g.pending = g.lines[g.line%26]
			if g.line%50 == 0 {
				g.pending = g.lines[26]
			}
		}
		k := copy(p[n:], g.pending)
		if rest := g.size - g.done; int64(k) > rest {
			k = int(rest)
		}
		g.pending = g.pending[k:]
		n += k
		g.done += int64(k)
	}
	g.sum.Write(p[:n])
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func TestSinkFiftyMegabytesInConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 50 MB")
	}
	const size = 50 << 20
	sink := testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{})
	c := mustDial(t, sink.Addr, func(o *relay.Options) { o.Timeout = 30 * time.Second })

	gen := newGenerator(size)

	var out []relay.Outcome
	var err error
	growthHeap, growthSys := memoryGrowth(t, func() {
		out, err = c.Send(testContext(t), relay.Envelope{From: "big@example.org", To: []string{"rcpt@example.net"}, Size: gen.size}, gen)
	})
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	c.Quit()
	t.Logf("sent %d bytes", gen.done)
	// Far below the 50 MB sent: a copy of the body anywhere would show.
	if growthHeap > 4<<20 {
		t.Errorf("heap in use grew by %d KiB while streaming 50 MB", growthHeap>>10)
	}
	if growthSys > 16<<20 {
		t.Errorf("memory obtained from the OS grew by %d KiB while streaming 50 MB", growthSys>>10)
	}

	want := gen.sum.Sum(nil)
	got := sink.WaitFor(t, 1, 60*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d messages at the sink", len(got))
	}
	if int64(len(got[0].Data)) != gen.done {
		t.Fatalf("sink got %d bytes, sent %d", len(got[0].Data), gen.done)
	}
	if sum := sha256.Sum256(got[0].Data); !bytes.Equal(sum[:], want) {
		t.Errorf("sink data differs from what was generated")
	}
}

// memoryGrowth runs f and returns how far above their level before it the
// heap in use and the memory obtained from the OS went, sampled every
// 10 ms.
func memoryGrowth(t *testing.T, f func()) (heap, sys int64) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var (
		mu                     sync.Mutex
		peakHeapInuse, peakSys uint64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			mu.Lock()
			peakHeapInuse = max(peakHeapInuse, m.HeapInuse)
			peakSys = max(peakSys, m.Sys)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-sampled
	heap, sys = int64(peakHeapInuse)-int64(before.HeapInuse), int64(peakSys)-int64(before.Sys)
	t.Logf("HeapInuse before %d KiB, peak %d KiB (+%d KiB); Sys before %d KiB, peak %d KiB (+%d KiB)",
		before.HeapInuse>>10, peakHeapInuse>>10, heap>>10, before.Sys>>10, peakSys>>10, sys>>10)
	return heap, sys
}

// limitedDiscard is a server that takes one recipient per transaction
// ("452 4.5.3" to the others) and keeps of each message only its size and
// SHA-256, on every path (PIPELINING and CHUNKING advertised).
func limitedDiscard(d *dialogue, sums *[][]byte) {
	d.say("220 discard.test ESMTP")
	d.line()
	d.say("250-discard.test", "250-PIPELINING", "250-CHUNKING", "250 8BITMIME")
	rcpts := 0
	var h hash.Hash
	buf := make([]byte, 32<<10)
	for {
		cmd := d.line()
		f := strings.Fields(cmd)
		switch {
		case len(f) == 0, f[0] == "QUIT":
			d.say("221 bye")
			return
		case f[0] == "MAIL":
			rcpts, h = 0, sha256.New()
			d.say("250 ok")
		case f[0] == "RCPT" && rcpts > 0:
			d.say("452 4.5.3 Too many recipients")
		case f[0] == "RCPT":
			rcpts++
			d.say("250 ok")
		case f[0] == "DATA":
			d.say("354 go ahead")
			for {
				_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				l, err := d.r.ReadSlice('\n')
				if err != nil || string(l) == ".\r\n" {
					break
				}
				h.Write(bytes.TrimPrefix(l, []byte(".")))
			}
			*sums = append(*sums, h.Sum(nil))
			d.say("250 queued")
		case f[0] == "BDAT":
			n, _ := strconv.ParseInt(f[1], 10, 64)
			_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.CopyBuffer(h, io.LimitReader(d.r, n), buf)
			if len(f) > 2 {
				*sums = append(*sums, h.Sum(nil))
			}
			d.say("250 ok")
		default:
			d.say("250 ok")
		}
	}
}

func TestSplitLargeMessageInConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 3 times 20 MB on each path")
	}
	const size = 20 << 20
	ref := newGenerator(size)
	io.Copy(io.Discard, ref)
	want := ref.sum.Sum(nil)
	for _, p := range pathOptions {
		t.Run(p.mode, func(t *testing.T) {
			var sums [][]byte
			addr, done := fakeServer(t, func(d *dialogue) { limitedDiscard(d, &sums) })
			c := mustDial(t, addr, func(o *relay.Options) {
				if p.mutate != nil {
					p.mutate(o)
				}
				o.Timeout = 30 * time.Second
			})
			env := relay.Envelope{From: "big@example.org", To: []string{"a@example.net", "b@example.net", "c@example.net"}, Size: ref.size,
				Reopen: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(newGenerator(size)), nil }}
			var out []relay.Outcome
			var err error
			heap, sys := memoryGrowth(t, func() { out, err = c.Send(testContext(t), env, newGenerator(size)) })
			if err != nil {
				t.Fatal(err)
			}
			accepted(t, out, 3)
			c.Quit()
			<-done
			if heap > 4<<20 || sys > 16<<20 {
				t.Errorf("memory grew while sending 20 MB three times: heap +%d KiB, from the OS +%d KiB", heap>>10, sys>>10)
			}
			if len(sums) != 3 {
				t.Fatalf("%d messages received, want 3", len(sums))
			}
			for i, s := range sums {
				if !bytes.Equal(s, want) {
					t.Errorf("message %d differs from what was generated", i+1)
				}
			}
		})
	}
}
