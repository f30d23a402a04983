package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
)

// refDecode is an independent, whole-buffer implementation of RFC 1939 §3
// used as the oracle: split at CRLF, stop at ".\r\n", strip one leading dot.
// rest is what follows the terminator; ok is false if there is none.
func refDecode(in []byte) (out, rest []byte, ok bool) {
	out = []byte{}
	pos := 0
	for {
		if bytes.HasPrefix(in[pos:], []byte(".\r\n")) {
			return out, in[pos+3:], true
		}
		idx := bytes.Index(in[pos:], []byte("\r\n"))
		if idx < 0 {
			return out, nil, false
		}
		start := pos
		if in[pos] == '.' {
			start++
		}
		out = append(out, in[start:pos+idx+2]...)
		pos += idx + 2
	}
}

// readerVariants feed the same bytes to the decoder with different read
// boundaries, so CRLF and ".\r\n" are split across reads.
var readerVariants = []struct {
	name string
	wrap func(io.Reader) *bufio.Reader
}{
	{"whole", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, readBufferSize) }},
	{"one-byte", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) }},
	{"half", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.HalfReader(r), 16) }},
	{"data-err", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.DataErrReader(r), 16) }},
}

// decodeAll reads the whole body with output buffers of size chunk and
// returns the body, the bytes left in the stream afterwards, and the error.
func decodeAll(wire []byte, wrap func(io.Reader) *bufio.Reader, chunk int) (body, rest []byte, err error) {
	br := wrap(bytes.NewReader(wire))
	d := newDotReader(br)
	buf := make([]byte, chunk)
	for {
		n, rerr := d.Read(buf)
		body = append(body, buf[:n]...)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return body, nil, rerr
		}
	}
	rest, err = io.ReadAll(br)
	return body, rest, err
}

func TestDotReader(t *testing.T) {
	long := strings.Repeat("x", 200_000) // a line far above 64 KiB and the bufio buffer
	tests := []struct {
		name string
		wire string
		want string // ignored if truncated
		rest string
		// truncated: the stream ends before ".\r\n"
		truncated bool
	}{
		{name: "empty message", wire: ".\r\n", want: ""},
		{name: "simple", wire: "a\r\nb\r\n.\r\n", want: "a\r\nb\r\n"},
		{name: "stuffed leading dot", wire: "..hidden\r\n.\r\n", want: ".hidden\r\n"},
		{name: "lone stuffed dot", wire: "..\r\n.\r\n", want: ".\r\n"},
		{name: "triple dot", wire: "...\r\n.\r\n", want: "..\r\n"},
		{name: "dot only in first line", wire: "..\r\n", truncated: true},
		{name: "unstuffed leading dot is stripped", wire: ".x\r\n.\r\n", want: "x\r\n"},
		{name: "dot mid-line", wire: "a.b\r\nend.\r\n.\r\n", want: "a.b\r\nend.\r\n"},
		{name: "bare LF is not a line end", wire: "a\n.\r\nb\r\n.\r\n", want: "a\n.\r\nb\r\n"},
		{name: "bare LF at start of line", wire: "\n.x\r\n.\r\n", want: "\n.x\r\n"},
		{name: "bare CR inside", wire: "a\rb\r\n.\r\n", want: "a\rb\r\n"},
		{name: "CR CR LF", wire: "a\r\r\n.\r\n", want: "a\r\r\n"},
		{name: "CR then dot", wire: "a\r.\r\n.\r\n", want: "a\r.\r\n"},
		{name: "dot CR not LF", wire: ".\rx\r\n.\r\n", want: "\rx\r\n"},
		{name: "dot CR CR LF", wire: ".\r\r\n.\r\n", want: "\r\r\n"},
		{name: "dot LF", wire: ".\n\r\n.\r\n", want: "\n\r\n"},
		{name: "blank lines", wire: "\r\n\r\n.\r\n", want: "\r\n\r\n"},
		{name: "NUL and 8-bit", wire: "\x00\xff\xc3\xa4\r\n.\r\n", want: "\x00\xff\xc3\xa4\r\n"},
		{name: "long line", wire: long + "\r\n." + long + "\r\n.\r\n", want: long + "\r\n" + long + "\r\n"},
		{name: "next response stays unread", wire: "a\r\n.\r\n+OK next\r\n", want: "a\r\n", rest: "+OK next\r\n"},
		{name: "pipelined body after body", wire: ".\r\n..\r\n.\r\n", want: "", rest: "..\r\n.\r\n"},
		{name: "truncated mid-line", wire: "a\r\nb", truncated: true},
		{name: "truncated after dot", wire: "a\r\n.", truncated: true},
		{name: "truncated after dot CR", wire: "a\r\n.\r", truncated: true},
		{name: "truncated nothing", wire: "", truncated: true},
		{name: "truncated long line", wire: long, truncated: true},
		{name: "terminator needs CRLF before it", wire: "a.\r\n", truncated: true},
	}
	for _, tc := range tests {
		for _, v := range readerVariants {
			for _, chunk := range []int{1, 2, 7, 4096} {
				t.Run(fmt.Sprintf("%s/%s/%d", tc.name, v.name, chunk), func(t *testing.T) {
					body, rest, err := decodeAll([]byte(tc.wire), v.wrap, chunk)
					if tc.truncated {
						if !errors.Is(err, io.ErrUnexpectedEOF) {
							t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
						}
						return
					}
					if err != nil {
						t.Fatalf("err = %v", err)
					}
					if string(body) != tc.want {
						t.Errorf("body = %q, want %q", abbrev(body), abbrev([]byte(tc.want)))
					}
					if string(rest) != tc.rest {
						t.Errorf("rest = %q, want %q", rest, tc.rest)
					}
				})
			}
		}
	}
}

// TestDotReaderGolden decodes every testdata/dotstuff/*.wire file and
// compares with NAME.want, or expects truncation when there is none.
func TestDotReaderGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/dotstuff/*.wire")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wire, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(f, ".wire") + ".want")
			truncated := errors.Is(err, os.ErrNotExist)
			if err != nil && !truncated {
				t.Fatal(err)
			}
			refBody, refRest, refOK := refDecode(wire)
			if refOK == truncated {
				t.Fatalf("fixture disagrees with oracle: truncated=%v oracle ok=%v", truncated, refOK)
			}
			for _, v := range readerVariants {
				body, rest, err := decodeAll(wire, v.wrap, 5)
				if truncated {
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Errorf("%s: err = %v, want io.ErrUnexpectedEOF", v.name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				if !bytes.Equal(body, want) || !bytes.Equal(body, refBody) {
					t.Errorf("%s: body = %q, want %q (oracle %q)", v.name, body, want, refBody)
				}
				if !bytes.Equal(rest, refRest) {
					t.Errorf("%s: rest = %q, want %q", v.name, rest, refRest)
				}
			}
		})
	}
}

// FuzzDotReader checks the streaming decoder against refDecode on
// arbitrary wire bytes, and that DotStuff followed by decoding returns the
// message (with CRLF appended if it had no final line break).
func FuzzDotReader(f *testing.F) {
	files, _ := filepath.Glob("testdata/dotstuff/*")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(3))
	}
	f.Add([]byte(".\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, wire []byte, sel uint8) {
		v := readerVariants[int(sel)%len(readerVariants)]
		chunk := 1 + int(sel)%9

		// Arbitrary input versus the oracle.
		body, rest, err := decodeAll(wire, v.wrap, chunk)
		refBody, refRest, ok := refDecode(wire)
		if ok {
			if err != nil {
				t.Fatalf("err = %v, oracle decoded %q", err, refBody)
			}
			if !bytes.Equal(body, refBody) || !bytes.Equal(rest, refRest) {
				t.Fatalf("got (%q, rest %q), oracle (%q, rest %q)", body, rest, refBody, refRest)
			}
		} else {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("err = %v on truncated input", err)
			}
			// What was emitted must be a prefix of the body had the stream
			// been completed.
			full, _, _ := refDecode(append(append([]byte{}, wire...), "\r\n.\r\n"...))
			if !bytes.HasPrefix(full, body) {
				t.Fatalf("partial output %q is not a prefix of %q", body, full)
			}
		}

		// Round trip: treat the input as a message.
		msg := wire
		want := msg
		if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
			want = append(append([]byte{}, msg...), "\r\n"...)
		}
		got, rest, err := decodeAll(pop3test.DotStuff(msg), v.wrap, chunk)
		if err != nil || !bytes.Equal(got, want) || len(rest) != 0 {
			t.Fatalf("round trip of %q: got %q, rest %q, err %v", msg, got, rest, err)
		}
	})
}

func abbrev(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%s...(%d bytes)", b[:80], len(b))
	}
	return string(b)
}
