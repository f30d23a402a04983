package message

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchMessage is the crlf.eml fixture's header followed by body lines of 76
// base64-alphabet octets up to size octets: the shape of the connector
// benchmark's workloads (infra/bench).
func benchMessage(b *testing.B, size int) []byte {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "crlf.eml"))
	if err != nil {
		b.Fatal(err)
	}
	hdr, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		b.Fatal("crlf.eml has no header/body separator")
	}
	msg := append(hdr, "\r\n\r\n"...)
	line := strings.Repeat("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 2)[:76] + "\r\n"
	for len(msg) < size {
		msg = append(msg, line...)
	}
	return msg[:size]
}

// BenchmarkInspector is the per-message cost of observing a message as the
// pipeline does: written through in 64 KiB pieces (pop3's read buffer),
// then Summary. The body is hashed for the Fingerprint, which dominates;
// "lf" is the same message with bare LF line ends, each of which the hash
// sees as CRLF (the worst case: one hash write per line). Allocations
// should not grow with the message size.
func BenchmarkInspector(b *testing.B) {
	for _, size := range []int{20_000, 1_000_000} {
		crlf := benchMessage(b, size)
		lf := bytes.ReplaceAll(crlf, []byte("\r\n"), []byte("\n"))
		for _, m := range []struct {
			name string
			msg  []byte
		}{{"crlf", crlf}, {"lf", lf}} {
			msg := m.msg
			b.Run(fmt.Sprintf("%s/size=%d", m.name, size), func(b *testing.B) {
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					in := NewInspector()
					for p := msg; len(p) > 0; {
						n := min(len(p), 64<<10)
						in.Write(p[:n])
						p = p[n:]
					}
					if s := in.Summary(); s.Size != int64(len(msg)) || s.MessageID == "" || s.Fingerprint == "" {
						b.Fatalf("summary: size %d, Message-ID %q, Fingerprint %q", s.Size, s.MessageID, s.Fingerprint)
					}
				}
			})
		}
	}
}
