package message

import (
	"bytes"
	"math/rand/v2"
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
		// idField is Summary.MessageIDField; fingerprint whether the
		// Summary has one.
		idField, fingerprint bool
	}{
		{file: "crlf.eml", messageID: "abc.123@example.org", returnPath: "bounce@isp.example", from: "alice@example.org", hasHdr: true, idField: true, fingerprint: true},
		{file: "lf-8bit.eml", from: "bob@example.org", eightBit: true, hasHdr: true, fingerprint: true},
		{file: "null-sender.eml", null: true, from: "MAILER-DAEMON@isp.example", hasHdr: true, fingerprint: true},
		{file: "empty.eml"},
		{file: "no-header.eml"},
		{file: "headers-only.eml", from: "c@example.org", hasHdr: true, fingerprint: true},
		{file: "sender-malformed-id.eml", messageID: "not-bracketed@x", sender: "list-bounces@lists.example", from: "d@example.org", hasHdr: true, idField: true, fingerprint: true},
		{file: "folded-nul.eml", messageID: "folded@example.org", from: "rene@example.org", hasHdr: true, idField: true, fingerprint: true},
		// Headers that do not parse: the Message-ID is still seen (item 7
		// of "nothing lost and nothing doubled"), and taken when it is on
		// one line; no fingerprint.
		{file: "bom.eml", messageID: "bom@example.org", eightBit: true, parseErr: true, idField: true},
		{file: "bom-later-id.eml", messageID: "bom.later@example.org", eightBit: true, parseErr: true, idField: true},
		{file: "continuation-first.eml", messageID: "cont@example.org", parseErr: true, idField: true},
		{file: "mbox-from.eml", messageID: "mbox@example.org", parseErr: true, idField: true},
		{file: "unparsed-folded-id.eml", parseErr: true, idField: true},
		{file: "unparsed-id-space.eml", parseErr: true, idField: true},
		{file: "unparsed-no-id.eml", parseErr: true},
		// Headers that parse, with the field name in odd spellings.
		{file: "odd-case-id.eml", messageID: "odd.case@example.org", from: "a@example.org", hasHdr: true, idField: true, fingerprint: true},
		{file: "space-colon-id.eml", messageID: "space.colon@example.org", from: "a@example.org", hasHdr: true, idField: true, fingerprint: true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := readFixture(t, tt.file)
			// Feed one byte at a time and all at once: the result must not
			// depend on how the stream is cut.
			for _, chunk := range []int{1, 7, len(raw) + 1} {
				s := inspect(raw, chunk)
				if s.Size != int64(len(raw)) {
					t.Errorf("chunk %d: size %d, want %d", chunk, s.Size, len(raw))
				}
				if s.MessageID != tt.messageID || s.ReturnPath != tt.returnPath || s.From != tt.from || s.Sender != tt.sender {
					t.Errorf("chunk %d: got id=%q rp=%q from=%q sender=%q, want %q %q %q %q", chunk, s.MessageID, s.ReturnPath, s.From, s.Sender, tt.messageID, tt.returnPath, tt.from, tt.sender)
				}
				if s.NullSender != tt.null || s.Has8Bit != tt.eightBit || (s.Header != nil) != tt.hasHdr || (s.ParseError != nil) != tt.parseErr {
					t.Errorf("chunk %d: null=%v 8bit=%v header=%v parse error %v", chunk, s.NullSender, s.Has8Bit, s.Header != nil, s.ParseError)
				}
				if s.MessageIDField != tt.idField || (s.Fingerprint != "") != tt.fingerprint {
					t.Errorf("chunk %d: MessageIDField %v, Fingerprint %q; want %v, a fingerprint %v", chunk, s.MessageIDField, s.Fingerprint, tt.idField, tt.fingerprint)
				}
			}
		})
	}
}

// TestFingerprint compares the fingerprints of two fixtures: copies of one
// message fetched from different mailboxes must match, different messages
// that reuse a Message-ID (scanners, printers, bulk mailers) must not.
func TestFingerprint(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
		why  string
	}{
		{"copy-a.eml", "copy-b.eml", true, "trace fields (Received, Delivered-To, Return-Path, X-Spam-*, Envelope-To) and folding differ"},
		{"copy-a.eml", "copy-lf.eml", true, "bare LF against CRLF line ends: a bare LF is hashed as CRLF"},
		{"copy-a.eml", "reused-id-subject.eml", false, "same Message-ID, another Subject"},
		{"copy-a.eml", "reused-id-body.eml", false, "same Message-ID, another body"},
		{"copy-a.eml", "reused-id-date.eml", false, "same Message-ID, another Date"},
		{"copy-a.eml", "reused-id-cc.eml", true, "same message, another Cc: one message to two lists names each (To and Cc are not covered)"},
		{"copy-a.eml", "copy-body-cr.eml", false, "a bare CR in the body is content, not a line end"},
		{"copy-a.eml", "crlf.eml", false, "unrelated messages"},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			a, b := inspect(readFixture(t, tt.a), 64<<10), inspect(readFixture(t, tt.b), 64<<10)
			if a.Fingerprint == "" || b.Fingerprint == "" {
				t.Fatalf("no fingerprint: %q %q (parse errors %v, %v)", a.Fingerprint, b.Fingerprint, a.ParseError, b.ParseError)
			}
			if !strings.HasPrefix(a.Fingerprint, "v1:") || len(a.Fingerprint) != len("v1:")+64 {
				t.Errorf("fingerprint %q is not v1: and 64 hex digits", a.Fingerprint)
			}
			if (a.Fingerprint == b.Fingerprint) != tt.same {
				t.Errorf("%s: fingerprints %s and %s, want equal %v", tt.why, a.Fingerprint, b.Fingerprint, tt.same)
			}
		})
	}
}

// TestChunkingDoesNotChangeSummary cuts every fixture in two at every
// offset, and in random pieces, so that the header's end, a CRLF of the
// body and a UTF-8 byte-order mark fall across writes.
func TestChunkingDoesNotChangeSummary(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		want := view(inspect(raw, len(raw)+1))
		for cut := 0; cut <= len(raw); cut++ {
			in := NewInspector()
			in.Write(raw[:cut])
			in.Write(raw[cut:])
			if got := view(in.Summary()); got != want {
				t.Fatalf("%s cut at %d:\n got %+v\nwant %+v", name, cut, got, want)
			}
		}
		for range 50 {
			in := NewInspector()
			for p := raw; len(p) > 0; {
				n := min(len(p), 1+rng.IntN(16))
				in.Write(p[:n])
				p = p[n:]
			}
			if got := view(in.Summary()); got != want {
				t.Fatalf("%s in random pieces:\n got %+v\nwant %+v", name, got, want)
			}
		}
	}
}

// summaryView is a Summary without its pointers, for comparing.
type summaryView struct {
	Size                                                   int64
	MessageID, ReturnPath, Sender, From                    string
	NullSender, Has8Bit, Truncated, HasHdr, MessageIDField bool
	ParseError, Fingerprint                                string
}

func view(s *Summary) summaryView {
	v := summaryView{Size: s.Size, MessageID: s.MessageID, ReturnPath: s.ReturnPath, Sender: s.Sender, From: s.From,
		NullSender: s.NullSender, Has8Bit: s.Has8Bit, Truncated: s.HeaderTruncated, HasHdr: s.Header != nil,
		MessageIDField: s.MessageIDField, Fingerprint: s.Fingerprint}
	if s.ParseError != nil {
		v.ParseError = s.ParseError.Error()
	}
	return v
}

// inspect writes raw through a new Inspector in pieces of chunk bytes.
func inspect(raw []byte, chunk int) *Summary {
	in := NewInspector()
	for i := 0; i < len(raw); i += chunk {
		in.Write(raw[i:min(i+chunk, len(raw))])
	}
	return in.Summary()
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
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
	if s.Fingerprint != "" {
		t.Fatalf("fingerprint %q of a truncated header: a field past the bound could differ", s.Fingerprint)
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
		s := inspect(raw, chunk)
		if s.Size != int64(len(raw)) {
			t.Fatalf("size %d != %d", s.Size, len(raw))
		}
		// Chunking never changes the Summary, the Fingerprint above all:
		// the connector compares copies fetched through different reads.
		whole := inspect(raw, len(raw)+1)
		if got, want := view(s), view(whole); got != want {
			t.Fatalf("chunks of %d:\n got %+v\nwant %+v", chunk, got, want)
		}
		if s.Fingerprint != "" && (s.ParseError != nil || s.HeaderTruncated || s.Header == nil) {
			t.Fatalf("fingerprint %q for an untrusted header (parse error %v, truncated %v)", s.Fingerprint, s.ParseError, s.HeaderTruncated)
		}
		if s.MessageIDField && !bytes.Contains(bytes.ToLower(raw), []byte("message-id")) {
			t.Fatalf("MessageIDField without \"message-id\" in the input")
		}
		want8 := bytes.IndexFunc(raw, func(r rune) bool { return r >= 0x80 }) >= 0
		if s.Has8Bit != want8 {
			t.Fatalf("Has8Bit = %v, want %v", s.Has8Bit, want8)
		}
	})
}
