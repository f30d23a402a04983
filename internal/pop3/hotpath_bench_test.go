package pop3

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

// BenchmarkDotUnstuff compares our RETR reader with net/textproto's
// DotReader (the standard library's peer) on the same 1 MiB wire body,
// one line in eight dot-stuffed.
func BenchmarkDotUnstuff(b *testing.B) {
	var w strings.Builder
	line := strings.Repeat("x", 74)
	for i := 0; w.Len() < 1<<20; i++ {
		if i%8 == 0 {
			w.WriteString("..")
		}
		w.WriteString(line)
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	wire := []byte(w.String())
	buf := make([]byte, 32<<10)
	for _, bc := range []struct {
		name string
		open func(r *bufio.Reader) io.Reader
	}{
		{"ours", func(r *bufio.Reader) io.Reader { return newDotReader(r) }},
		{"textproto", func(r *bufio.Reader) io.Reader { return textproto.NewReader(r).DotReader() }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				r := bufio.NewReaderSize(bytes.NewReader(wire), 64<<10)
				if _, err := io.CopyBuffer(io.Discard, bc.open(r), buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
