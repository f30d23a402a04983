package message

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSummaryFixtures(t *testing.T) {
	tests := []struct {
		file                             string
		messageID, returnPath, from      string
		sender                           string
		null, eightBit, parseErr, hasHdr bool
	}{
		{file: "crlf.eml", messageID: "abc.123@example.org", returnPath: "bounce@isp.example", from: "alice@example.org", hasHdr: true},
		{file: "lf-8bit.eml", from: "bob@example.org", eightBit: true, hasHdr: true},
		{file: "null-sender.eml", null: true, from: "MAILER-DAEMON@isp.example", hasHdr: true},
		{file: "empty.eml"},
		{file: "no-header.eml"},
		{file: "headers-only.eml", from: "c@example.org", hasHdr: true},
		{file: "sender-malformed-id.eml", messageID: "not-bracketed@x", sender: "list-bounces@lists.example", from: "d@example.org", hasHdr: true},
		{file: "folded-nul.eml", messageID: "folded@example.org", from: "rene@example.org", hasHdr: true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			// Feed one byte at a time and all at once: the result must not
			// depend on how the stream is cut.
			for _, chunk := range []int{1, 7, len(raw) + 1} {
				in := NewInspector()
				for i := 0; i < len(raw); i += chunk {
					in.Write(raw[i:min(i+chunk, len(raw))])
				}
				s := in.Summary()
				if s.Size != int64(len(raw)) {
					t.Errorf("chunk %d: size %d, want %d", chunk, s.Size, len(raw))
				}
				if s.MessageID != tt.messageID || s.ReturnPath != tt.returnPath || s.From != tt.from || s.Sender != tt.sender {
					t.Errorf("chunk %d: got id=%q rp=%q from=%q sender=%q, want %q %q %q %q", chunk, s.MessageID, s.ReturnPath, s.From, s.Sender, tt.messageID, tt.returnPath, tt.from, tt.sender)
				}
				if s.NullSender != tt.null || s.Has8Bit != tt.eightBit || (s.Header != nil) != tt.hasHdr {
					t.Errorf("chunk %d: null=%v 8bit=%v header=%v", chunk, s.NullSender, s.Has8Bit, s.Header != nil)
				}
			}
		})
	}
}

func TestHeaderEndDoesNotIncludeBody(t *testing.T) {
	body := strings.Repeat("Message-ID: <in-body@x>\r\n", 3)
	msg := "From: a@b.example\r\n\r\n" + body
	in := NewInspector()
	in.Write([]byte(msg))
	s := in.Summary()
	if s.MessageID != "" {
		t.Fatalf("Message-ID %q taken from the body", s.MessageID)
	}
	if got := in.header.String(); got != "From: a@b.example\r\n\r\n" {
		t.Fatalf("header copy %q", got)
	}
}

func TestHugeHeaderIsBounded(t *testing.T) {
	in := NewInspector()
	line := []byte("X-Filler: " + strings.Repeat("y", 100) + "\r\n")
	for i := 0; i < 20000; i++ { // ~2.2 MB of header, 20,000 fields
		in.Write(line)
	}
	in.Write([]byte("Message-ID: <late@x>\r\n\r\nbody\r\n"))
	s := in.Summary()
	if !s.HeaderTruncated {
		t.Fatal("want HeaderTruncated")
	}
	if in.header.Len() > MaxHeaderBytes {
		t.Fatalf("kept %d bytes of header, bound is %d", in.header.Len(), MaxHeaderBytes)
	}
}

func FuzzInspector(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.eml")
	for _, name := range files {
		raw, _ := os.ReadFile(name)
		f.Add(raw, 3)
	}
	f.Fuzz(func(t *testing.T, raw []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		in := NewInspector()
		for i := 0; i < len(raw); i += chunk {
			in.Write(raw[i:min(i+chunk, len(raw))])
		}
		s := in.Summary()
		if s.Size != int64(len(raw)) {
			t.Fatalf("size %d != %d", s.Size, len(raw))
		}
		want8 := bytes.IndexFunc(raw, func(r rune) bool { return r >= 0x80 }) >= 0
		if s.Has8Bit != want8 {
			t.Fatalf("Has8Bit = %v, want %v", s.Has8Bit, want8)
		}
	})
}
