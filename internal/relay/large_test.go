package relay_test

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"
	"runtime"
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
	out, err := c.Send(testContext(t), relay.Envelope{From: "big@example.org", To: []string{"rcpt@example.net"}, Size: gen.size}, gen)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	accepted(t, out, 1)
	c.Quit()

	growthHeap := int64(peakHeapInuse) - int64(before.HeapInuse)
	growthSys := int64(peakSys) - int64(before.Sys)
	t.Logf("sent %d bytes; HeapInuse before %d KiB, peak %d KiB (+%d KiB); Sys before %d KiB, peak %d KiB (+%d KiB)",
		gen.done, before.HeapInuse>>10, peakHeapInuse>>10, growthHeap>>10, before.Sys>>10, peakSys>>10, growthSys>>10)
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
