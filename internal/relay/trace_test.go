package relay_test

import (
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/relay"
)

func TestTraceHeader(t *testing.T) {
	at := time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -7*3600))
	cases := []struct {
		name string
		in   relay.TraceInfo
		want string
	}{
		{
			name: "brief example",
			in: relay.TraceInfo{From: "pop.isp.example", FromComment: "POP3 mailbox sales", By: "relay-host",
				With: "POP3", ID: "id", For: []string{"a@b"}, At: at},
			want: "Received: from pop.isp.example (POP3 mailbox sales) by relay-host (popconnector) with POP3 id <id>\r\n\tfor <a@b>; Mon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "comment inside From",
			in:   relay.TraceInfo{From: "pop.isp.example (POP3 mailbox sales)", By: "relay-host", With: "POP3", ID: "id", For: []string{"a@b"}, At: at},
			want: "Received: from pop.isp.example (POP3 mailbox sales) by relay-host (popconnector) with POP3 id <id>\r\n\tfor <a@b>; Mon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "message id with brackets and UTC",
			in:   relay.TraceInfo{From: "pop.example", By: "mx", ByComment: "custom", With: "POP3", ID: "<abc.123@host.example>", For: []string{"x@y.example"}, At: at.UTC()},
			want: "Received: from pop.example by mx (custom) with POP3 id <abc.123@host.example>\r\n\tfor <x@y.example>; Mon, 2 Jan 2006 22:04:05 +0000\r\n",
		},
		{
			name: "several recipients: no FOR (RFC 5321 §4.4)",
			in:   relay.TraceInfo{From: "pop.example", By: "mx", With: "POP3", ID: "1", For: []string{"a@x", "b@x"}, At: at},
			want: "Received: from pop.example by mx (popconnector) with POP3 id <1>;\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "empty values drop their clauses",
			in:   relay.TraceInfo{By: "mx", At: at},
			want: "Received: by mx (popconnector);\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "CRLF injection in From",
			in:   relay.TraceInfo{From: "evil.example\r\nBcc: victim@example.net", By: "mx", With: "POP3", At: at},
			want: "Received: from evil.example (Bcc: victim@example.net) by mx (popconnector) with POP3;\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "bare LF and NUL in By",
			in:   relay.TraceInfo{From: "a", By: "mx\nX-Injected:\x00yes", With: "POP3", At: at},
			want: "Received: from a by mxX-Injected:yes (popconnector) with POP3;\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "comment cannot be closed early",
			in:   relay.TraceInfo{From: "a", FromComment: "x) by forged.example (y\\", By: "mx", At: at},
			want: "Received: from a (x\\) by forged.example \\(y\\\\) by mx (popconnector);\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "FOR cannot end the path or the clause",
			in:   relay.TraceInfo{By: "mx", For: []string{"a@b>; Tue, 1 Jan 2030 00:00:00 +0000\r\nX: y"}, At: at},
			want: "Received: by mx (popconnector)\r\n\tfor <a@bTue1Jan203000:00:00+0000X:y>; Mon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "WITH and ID keep only their characters",
			in:   relay.TraceInfo{By: "mx", With: "POP3\r\nX: y", ID: "a b>\r\n<c", At: at},
			want: "Received: by mx (popconnector) with POP3Xy id <abc>;\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "unicode line separator and invalid UTF-8",
			in:   relay.TraceInfo{From: "pop.example", FromComment: "mailbox\u2028Bcc: x \xff", By: "mx", At: at},
			want: "Received: from pop.example (mailbox Bcc: x ?) by mx (popconnector);\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
		{
			name: "internationalised names pass (RFC 6532)",
			in:   relay.TraceInfo{From: "pop.bücher.example", FromComment: "Postfach Jörg", By: "mx", At: at},
			want: "Received: from pop.bücher.example (Postfach Jörg) by mx (popconnector);\r\n\tMon, 2 Jan 2006 15:04:05 -0700\r\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := relay.TraceHeader(tc.in)
			if got != tc.want {
				t.Errorf("TraceHeader =\n%q\nwant\n%q", got, tc.want)
			}
			assertOneField(t, got)
		})
	}
}

// assertOneField checks the structural guarantee whatever the input: one
// field, CRLF only at fold points and the end, no control characters, lines
// within RFC 5322's 998 octets.
func assertOneField(t *testing.T, h string) {
	t.Helper()
	if !strings.HasPrefix(h, "Received: ") || !strings.HasSuffix(h, "\r\n") {
		t.Fatalf("not a Received field: %q", h)
	}
	lines := strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n")
	for i, l := range lines {
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("line %d is not a continuation: %q", i, l)
		}
		if len(l) > 998 {
			t.Errorf("line %d is %d octets", i, len(l))
		}
		for _, r := range strings.TrimPrefix(l, "\t") {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
				t.Errorf("control character %U in %q", r, l)
			}
		}
	}
	if strings.Count(h, ";") < 1 {
		t.Errorf("no date separator in %q", h)
	}
}

func TestTraceHeaderHostileValuesStayOneField(t *testing.T) {
	hostile := []string{
		"\r\n", "\n\n", "\r", "x\r\n\r\nbody", strings.Repeat("A", 5000), strings.Repeat("(", 300),
		"\x00\x01\x1b[31m", "a\u0085b", "\u202e", "))))", "\\", "<>;,", "\t\t",
	}
	for _, h := range hostile {
		got := relay.TraceHeader(relay.TraceInfo{From: h, FromComment: h, By: h, ByComment: h, With: h, ID: h, For: []string{h}})
		assertOneField(t, got)
	}
}

func TestTraceHeaderDefaultsToNow(t *testing.T) {
	before := time.Now().Add(-time.Second)
	h := relay.TraceHeader(relay.TraceInfo{By: "mx"})
	_, date, _ := strings.Cut(h, ";\r\n\t")
	ts, err := time.Parse("Mon, 2 Jan 2006 15:04:05 -0700", strings.TrimSpace(date))
	if err != nil {
		t.Fatalf("date %q: %v", date, err)
	}
	if ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("date %v is not now", ts)
	}
}
