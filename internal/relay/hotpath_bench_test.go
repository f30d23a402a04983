package relay

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// benchBody is a 1 MiB message body of 76-column lines, one in eight
// starting with a dot, the shape a dot-stuffer cannot skip.
func benchBody() []byte {
	var b strings.Builder
	line := strings.Repeat("x", 74)
	for i := 0; b.Len() < 1<<20; i++ {
		if i%8 == 0 {
			b.WriteString(".")
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// BenchmarkDotStuff compares our stuffer with net/textproto's DotWriter
// (the peer it replaced, see dotStuffer) on the same body, through the
// same 32 KiB copy buffer the relay uses.
func BenchmarkDotStuff(b *testing.B) {
	body := benchBody()
	buf := make([]byte, 32<<10)
	for _, bc := range []struct {
		name  string
		write func(w io.Writer, r io.Reader) error
	}{
		{"ours", func(w io.Writer, r io.Reader) error {
			d := newDotStuffer(w)
			if _, err := io.CopyBuffer(d, r, buf); err != nil {
				return err
			}
			return d.Finish()
		}},
		{"textproto", func(w io.Writer, r io.Reader) error {
			bw := bufio.NewWriter(w)
			d := textproto.NewWriter(bw).DotWriter()
			if _, err := io.CopyBuffer(d, r, buf); err != nil {
				return err
			}
			return d.Close()
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.write(io.Discard, bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTraceHeader measures building the Received: field added to
// every relayed message.
func BenchmarkTraceHeader(b *testing.B) {
	info := TraceInfo{From: "pop.isp.example", By: "popconn.corp.example", With: "POP3",
		ID: "sales/1795356481.M136510P0029578Q00000092", For: []string{"sales@corp.example"},
		At: time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC)}
	b.ReportAllocs()
	for b.Loop() {
		if h := TraceHeader(info); len(h) == 0 {
			b.Fatal("empty header")
		}
	}
}
