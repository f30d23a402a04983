package notify

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/popconnector/popconnector/internal/relay"
)

// FuzzBuildDSN builds notices from arbitrary original headers, server
// replies and free text, and checks that each parses back as the same
// three-part report with no field of ours added or lost, and that nothing
// but the text/rfc822-headers part and the Message-ID depends on the
// original header.
func FuzzBuildDSN(f *testing.F) {
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, "Message rejected as spam\r\nBcc: x@example.com", "left\non the server")
	}
	f.Add([]byte("Subject: =?utf-8?b?AAECAw0KQmNjOiB4?=\r\n\r\n"), "\x00\xff\u2028", "")
	f.Fuzz(func(t *testing.T, orig []byte, diag, text string) {
		e := &relay.Error{Op: "data", Code: 550, Enhanced: "5.7.1", Message: diag}
		n := Notice{
			From: "postmaster@corp.example", To: "admin@corp.example", ReportingMTA: "popconn.corp.example",
			OriginalHeader: orig,
			Recipients:     []RecipientStatus{RecipientFromError("alice@corp.example", e, "exch.corp.example", now)},
			Cause:          CauseSpam, Reason: text, Disposition: text, Mailbox: text, ArchiveKey: text,
			ArrivalDate: arrival, Now: now,
		}
		var buf bytes.Buffer
		if err := BuildDSN(&buf, n); err != nil {
			t.Fatalf("BuildDSN: %v", err)
		}
		p := parseNotice(t, buf.Bytes())
		got := keys(p.top.Header.Header)
		want := []string{"Content-Type", "From", "To", "Date", "Subject", "Message-Id", "In-Reply-To", "References",
			"X-Popconn-Notice", "Auto-Submitted", "Mime-Version"}
		if !p.top.Has("In-Reply-To") {
			want = slices.DeleteFunc(want, func(k string) bool { return k == "In-Reply-To" || k == "References" })
		}
		if !slices.Equal(got, want) {
			t.Fatalf("top-level fields = %q", got)
		}
		if len(p.parts) != 3 || p.parts[0].ctype != "text/plain" || p.parts[1].ctype != "message/delivery-status" || p.parts[2].ctype != "text/rfc822-headers" {
			t.Fatalf("parts: %d", len(p.parts))
		}
		g := groups(t, p.parts[1].body)
		if len(g) != 2 || !slices.Equal(keys(g[1]), []string{"Final-Recipient", "Action", "Status", "Remote-Mta", "Diagnostic-Code", "Last-Attempt-Date"}) &&
			!slices.Equal(keys(g[1]), []string{"Final-Recipient", "Action", "Status", "Remote-Mta", "Last-Attempt-Date"}) {
			t.Fatalf("delivery-status groups: %d, recipient fields %q", len(g), keys(g[len(g)-1]))
		}
		want3, truncated := normaliseHeader(orig)
		if !bytes.Equal(p.parts[2].body, want3) {
			t.Fatalf("rfc822-headers =\n%q\nwant\n%q", p.parts[2].body, want3)
		}
		// The same notice about no original at all has the same Subject
		// and explanation: no text of the original reached them.
		none := n
		none.OriginalHeader = nil
		buf.Reset()
		if err := BuildDSN(&buf, none); err != nil {
			t.Fatalf("BuildDSN without an original: %v", err)
		}
		q := parseNotice(t, buf.Bytes())
		if a, b := p.top.Get("Subject"), q.top.Get("Subject"); a != b {
			t.Fatalf("Subject %q depends on the original header (without it: %q)", a, b)
		}
		if !truncated && !bytes.Equal(p.parts[0].body, q.parts[0].body) {
			t.Fatalf("explanation depends on the original header:\n%s\nwithout it:\n%s", p.parts[0].body, q.parts[0].body)
		}
	})
}
