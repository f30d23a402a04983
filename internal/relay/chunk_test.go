package relay

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// chunkAll cuts in with chunker into chunks of at most size bytes, reading
// the source one byte at a time when oneByte is set.
func chunkAll(t *testing.T, in []byte, size int, oneByte bool) string {
	t.Helper()
	var src io.Reader = bytes.NewReader(in)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	k := &chunker{src: src, in: make([]byte, 5)}
	dst := make([]byte, size)
	var out bytes.Buffer
	for range len(in)*2 + 4 {
		n, done, err := k.fill(dst)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && !done {
			t.Fatalf("size %d: an empty chunk before the end", size)
		}
		out.Write(dst[:n])
		if done {
			return out.String()
		}
	}
	t.Fatalf("size %d: chunker never ended", size)
	return ""
}

// dataMessage is the message a server takes from the DATA path for in:
// the dot-stuffed wire bytes, unstuffed, without the terminator.
func dataMessage(in []byte) string {
	wire := strings.TrimSuffix(referenceStuff(in), ".\r\n")
	lines := strings.SplitAfter(wire, "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, ".")
	}
	return strings.Join(lines, "")
}

// The BDAT path delivers what the DATA path delivers, however the body is
// cut into chunks and reads.
func TestChunkerMatchesData(t *testing.T) {
	for _, in := range []string{
		"", "a", "a\r\n", "a\nb\n", "a\rb\r\n", "a\r\r\nb", "a\r", "\n", "\r", "\r\n\r\n",
		".leading\r\n..two\n.\n", "x\n\n\n", strings.Repeat("ab\n", 50),
	} {
		want := dataMessage([]byte(in))
		for _, size := range []int{2, 3, 4, 7, 64, chunkSize} {
			for _, oneByte := range []bool{false, true} {
				if got := chunkAll(t, []byte(in), size, oneByte); got != want {
					t.Errorf("%q, chunks of %d (one-byte reads %v): %q, want %q", in, size, oneByte, got, want)
				}
			}
		}
	}
}

func FuzzChunker(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n..\r\n", "a\r\r\nb", "x\ny\r", "\r\n\r\n."} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, in []byte, size int) {
		size = 2 + int(uint(size)%100)
		if got, want := chunkAll(t, in, size, false), dataMessage(in); got != want {
			t.Fatalf("chunks of %d: %q, want %q", size, got, want)
		}
	})
}
