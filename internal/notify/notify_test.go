package notify

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/popconnector/popconnector/internal/message"
	"github.com/popconnector/popconnector/internal/relay"
)

var (
	now     = time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC)
	arrival = time.Date(2024, 6, 3, 9, 13, 0, 0, time.FixedZone("CEST", 2*3600))
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// part is one decoded part of a notice.
type part struct {
	header gomessage.Header
	ctype  string
	params map[string]string
	body   []byte // transfer-decoded
}

type parsedNotice struct {
	raw   []byte
	top   mail.Header
	parts []part
}

// parseNotice reads a notice back with go-message and checks what every
// notice must be: 7-bit, lines within 998 bytes, CRLF line ends.
func parseNotice(t *testing.T, raw []byte) parsedNotice {
	t.Helper()
	for i, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d is %d bytes long", i+1, len(line))
		}
		for _, c := range line {
			if c >= 0x80 || c == '\r' || c == '\n' || c == 0 {
				t.Fatalf("line %d has byte %#x: %q", i+1, c, line)
			}
		}
	}
	e, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("reading the notice: %v\n%s", err, raw)
	}
	p := parsedNotice{raw: raw, top: mail.Header{Header: e.Header}}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatalf("the notice is not multipart:\n%s", raw)
	}
	for {
		pe, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		body, err := io.ReadAll(pe.Body)
		if err != nil {
			t.Fatalf("part body: %v", err)
		}
		ct, params, err := pe.Header.ContentType()
		if err != nil {
			t.Fatalf("part content type: %v", err)
		}
		p.parts = append(p.parts, part{header: pe.Header, ctype: ct, params: params, body: body})
	}
	return p
}

// groups splits a message/delivery-status body into its field groups.
func groups(t *testing.T, body []byte) []textproto.Header {
	t.Helper()
	var out []textproto.Header
	r := bufio.NewReader(bytes.NewReader(append(bytes.TrimRight(body, "\r\n"), "\r\n\r\n"...)))
	for {
		if _, err := r.Peek(1); err != nil {
			return out
		}
		h, err := textproto.ReadHeader(r)
		if err != nil {
			t.Fatalf("delivery-status group %d: %v\n%s", len(out)+1, err, body)
		}
		out = append(out, h)
	}
}

// keys lists a header's field names in order.
func keys(h textproto.Header) []string {
	var k []string
	for f := h.Fields(); f.Next(); {
		k = append(k, f.Key())
	}
	return k
}

// checkFields checks that h holds exactly want, field by field and in order.
func checkFields(t *testing.T, what string, h textproto.Header, want [][2]string) {
	t.Helper()
	var got [][2]string
	for f := h.Fields(); f.Next(); {
		got = append(got, [2]string{f.Key(), f.Value()})
	}
	if len(got) != len(want) {
		t.Errorf("%s: fields\n%q\nwant\n%q", what, got, want)
		return
	}
	for i := range want {
		if !strings.EqualFold(got[i][0], want[i][0]) || got[i][1] != want[i][1] {
			t.Errorf("%s: field %d = %q, want %q", what, i+1, got[i], want[i])
		}
	}
}

func spamNotice(t *testing.T) Notice {
	e := &relay.Error{Op: "data", Code: 550, Enhanced: "5.7.1", Message: "Message rejected as spam by Content Filtering."}
	return Notice{
		From:            "postmaster@corp.example",
		To:              "admin@corp.example",
		ReportingMTA:    "popconn.corp.example",
		ReceivedFromMTA: "pop.isp.example",
		OriginalHeader:  readFile(t, "spam.eml"),
		Recipients:      []RecipientStatus{RecipientFromError("alice@corp.example", e, "exch.corp.example", now)},
		Cause:           Classify(e),
		Reason:          "Exchange's content filter refused the message.",
		Disposition:     "left on the POP3 server",
		Mailbox:         "sales",
		ArchiveKey:      "sales/2024/06/03/uid-1.eml",
		ArrivalDate:     arrival,
		Now:             now,
	}
}

func build(t *testing.T, n Notice) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := BuildDSN(&buf, n); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBuildDSNStructureAndFields(t *testing.T) {
	n := spamNotice(t)
	p := parseNotice(t, build(t, n))

	// Top-level header, field by field.
	ct, params, err := p.top.ContentType()
	if err != nil || ct != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Errorf("Content-Type = %q %v (%v)", ct, params, err)
	}
	// No In-Reply-To or References: they would carry the original's
	// Message-ID, text its sender chose.
	if got := keys(p.top.Header.Header); !slices.Equal(got, []string{
		"Content-Type", "From", "To", "Date", "Subject", "Message-Id",
		"X-Popconn-Notice", "Auto-Submitted", "Mime-Version",
	}) {
		t.Errorf("top-level fields = %q", got)
	}
	from, _ := p.top.AddressList("From")
	to, _ := p.top.AddressList("To")
	if len(from) != 1 || from[0].Address != "postmaster@corp.example" || from[0].Name != "popconnector" {
		t.Errorf("From = %v", from)
	}
	if len(to) != 1 || to[0].Address != "admin@corp.example" {
		t.Errorf("To = %v", to)
	}
	if subj, err := p.top.Subject(); err != nil || subj != "Rejected as spam: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q (%v)", subj, err)
	}
	if d, err := p.top.Date(); err != nil || !d.Equal(now) {
		t.Errorf("Date = %v (%v)", d, err)
	}
	id, err := p.top.MessageID()
	if err != nil || id != NoticeID("offer-42@promo.example", nil, CauseSpam, true, "corp.example") ||
		!strings.HasPrefix(id, "popconn.notice.spam.failed.") || !strings.HasSuffix(id, "@corp.example") {
		t.Errorf("Message-ID = %q (%v)", id, err)
	}
	if v := p.top.Get("Auto-Submitted"); v != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", v)
	}
	if v := p.top.Get("X-Popconn-Notice"); v != "spam" {
		t.Errorf("X-Popconn-Notice = %q", v)
	}

	if len(p.parts) != 3 {
		t.Fatalf("%d parts, want 3", len(p.parts))
	}
	// (1) the explanation.
	text := p.parts[0]
	if text.ctype != "text/plain" || text.params["charset"] != "utf-8" || text.header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("part 1: %s %v %q", text.ctype, text.params, text.header.Get("Content-Transfer-Encoding"))
	}
	for _, want := range []string{
		"This is popconnector on popconn.corp.example.",
		"Exchange rejected a message as spam (or another content or sender filter refused it).",
		"Exchange's content filter refused the message.",
		"  POP3 mailbox: sales",
		"  Archived copy: sales/2024/06/03/uid-1.eml",
		"  Fetched: Mon, 03 Jun 2024 09:13:00 +0200",
		"  alice@corp.example: failed, 5.7.1: smtp; 550 5.7.1 Message rejected as spam by Content Filtering.",
		"What became of the message: left on the POP3 server.",
	} {
		if !strings.Contains(string(text.body), want+"\r\n") {
			t.Errorf("explanation lacks line %q:\n%s", want, text.body)
		}
	}
	// The original's From, Subject, Date and Message-ID are in the
	// attached header only.
	for _, not := range []string{"Promo", "Grüße", "07:12:40", "offer-42"} {
		if strings.Contains(string(text.body), not) {
			t.Errorf("explanation quotes the original (%q):\n%s", not, text.body)
		}
	}

	// (2) the delivery status, field by field (RFC 3464 §2.2, §2.3).
	ds := p.parts[1]
	if ds.ctype != "message/delivery-status" {
		t.Errorf("part 2 is %s", ds.ctype)
	}
	g := groups(t, ds.body)
	if len(g) != 2 {
		t.Fatalf("%d delivery-status groups, want 2:\n%s", len(g), ds.body)
	}
	checkFields(t, "per-message", g[0], [][2]string{
		{"Reporting-MTA", "dns; popconn.corp.example"},
		{"Received-From-MTA", "dns; pop.isp.example"},
		{"Arrival-Date", "Mon, 03 Jun 2024 09:13:00 +0200"},
	})
	checkFields(t, "per-recipient", g[1], [][2]string{
		{"Final-Recipient", "rfc822; alice@corp.example"},
		{"Action", "failed"},
		{"Status", "5.7.1"},
		{"Remote-MTA", "dns; exch.corp.example"},
		{"Diagnostic-Code", "smtp; 550 5.7.1 Message rejected as spam by Content Filtering."},
		{"Last-Attempt-Date", "Mon, 03 Jun 2024 10:00:00 +0000"},
	})
	// The field names are written as RFC 3464 spells them.
	for _, want := range []string{"\r\nReporting-MTA: ", "\r\nRemote-MTA: ", "\r\nFinal-Recipient: ", "\r\nDiagnostic-Code: "} {
		if !bytes.Contains(p.raw, []byte(want)) {
			t.Errorf("notice lacks %q", want)
		}
	}

	// (3) the original header, exactly, without the body.
	oh := p.parts[2]
	if oh.ctype != "text/rfc822-headers" || oh.header.Get("Content-Transfer-Encoding") != "7bit" {
		t.Errorf("part 3: %s %q", oh.ctype, oh.header.Get("Content-Transfer-Encoding"))
	}
	orig := readFile(t, "spam.eml")
	wantHeader := orig[:bytes.Index(orig, []byte("\r\n\r\n"))+2]
	if !bytes.Equal(oh.body, wantHeader) {
		t.Errorf("rfc822-headers =\n%q\nwant\n%q", oh.body, wantHeader)
	}
}

func TestBuildDSNSeveralRecipients(t *testing.T) {
	n := spamNotice(t)
	n.Cause = CauseUnknownRecipient
	n.OriginalEnvelopeID = "QQ314159 with+plus=eq"
	n.ReceivedFromMTA = ""
	n.ArrivalDate = time.Time{}
	n.Recipients = []RecipientStatus{
		{Final: "nobody@corp.example", Original: "nobody@isp.example", Action: ActionFailed, Status: "5.1.1",
			DiagnosticCode: "550 5.1.1 User unknown", RemoteMTA: "[192.0.2.25]"},
		{Final: "jörg@corp.example", Action: ActionDelayed, Status: "4.4.1", RemoteMTA: "[IPv6:2001:db8::25]",
			DiagnosticCode: "X-Local; connection refused", LastAttempt: now, WillRetryUntil: now.Add(5 * 24 * time.Hour)},
	}
	p := parseNotice(t, build(t, n))
	if subj, _ := p.top.Subject(); subj != "Unknown recipient: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	g := groups(t, p.parts[1].body)
	if len(g) != 3 {
		t.Fatalf("%d groups", len(g))
	}
	checkFields(t, "per-message", g[0], [][2]string{
		{"Original-Envelope-Id", "QQ314159+20with+2Bplus+3Deq"},
		{"Reporting-MTA", "dns; popconn.corp.example"},
	})
	checkFields(t, "recipient 1", g[1], [][2]string{
		{"Original-Recipient", "rfc822; nobody@isp.example"},
		{"Final-Recipient", "rfc822; nobody@corp.example"},
		{"Action", "failed"},
		{"Status", "5.1.1"},
		{"Remote-MTA", "dns; [192.0.2.25]"},
		{"Diagnostic-Code", "smtp; 550 5.1.1 User unknown"},
	})
	checkFields(t, "recipient 2", g[2], [][2]string{
		{"Final-Recipient", `utf-8; j\x{F6}rg@corp.example`},
		{"Action", "delayed"},
		{"Status", "4.4.1"},
		{"Remote-MTA", "dns; [IPv6:2001:db8::25]"},
		{"Diagnostic-Code", "x-local; connection refused"},
		{"Last-Attempt-Date", "Mon, 03 Jun 2024 10:00:00 +0000"},
		{"Will-Retry-Until", "Sat, 08 Jun 2024 10:00:00 +0000"},
	})
	// One failed recipient makes the notice a failure notice.
	if id, _ := p.top.MessageID(); !strings.Contains(id, ".unknown-recipient.failed.") {
		t.Errorf("Message-ID = %q", id)
	}

	// Only delayed recipients: a delay notice.
	n.Recipients = n.Recipients[1:]
	p = parseNotice(t, build(t, n))
	if subj, _ := p.top.Subject(); subj != "Delivery delayed: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	if id, _ := p.top.MessageID(); !strings.Contains(id, ".unknown-recipient.delayed.") {
		t.Errorf("Message-ID = %q", id)
	}
	if !bytes.Contains(p.parts[0].body, []byte("Delivery is being retried")) {
		t.Errorf("explanation:\n%s", p.parts[0].body)
	}
}

// TestBuildDSNFromParsedHeader uses the pipeline's parsed header
// (message.Inspector) instead of raw bytes.
func TestBuildDSNFromParsedHeader(t *testing.T) {
	raw := readFile(t, "latin1-8bit.eml")
	in := message.NewInspector()
	in.Write(raw)
	n := spamNotice(t)
	n.OriginalHeader = nil
	n.Original = in.Summary().Header
	n.Cause = CauseBadmail
	p := parseNotice(t, build(t, n))
	if subj, _ := p.top.Subject(); subj != "Moved to badmail: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	oh := p.parts[2]
	if oh.header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Errorf("8-bit original header sent as %q", oh.header.Get("Content-Transfer-Encoding"))
	}
	// The LF-only original comes back with CRLF line ends, bytes intact.
	wantHeader := bytes.ReplaceAll(raw[:bytes.Index(raw, []byte("\n\n"))+1], []byte("\n"), []byte("\r\n"))
	if !bytes.Equal(oh.body, wantHeader) {
		t.Errorf("rfc822-headers =\n%q\nwant\n%q", oh.body, wantHeader)
	}
	// The original's sender is in the attached header, not the text.
	if strings.Contains(string(p.parts[0].body), "joerg@example.net") {
		t.Errorf("explanation quotes the original's From:\n%s", p.parts[0].body)
	}
	if id, _ := p.top.MessageID(); id != NoticeID("l1@example.net", nil, CauseBadmail, true, "corp.example") {
		t.Errorf("Message-ID = %q", id)
	}
}

func TestBuildDSNProgrammaticHeader(t *testing.T) {
	var h mail.Header
	h.Set("Subject", "set by code\r\nBcc: victim@example.com")
	h.Set("From", "a@example.net")
	n := spamNotice(t)
	n.OriginalHeader, n.Original = nil, &h
	p := parseNotice(t, build(t, n))
	if subj, _ := p.top.Subject(); subj != "Rejected as spam: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	if p.top.Has("Bcc") {
		t.Error("a Bcc field appeared")
	}
	if body := string(p.parts[2].body); body != "From: a@example.net\r\nSubject: set by code Bcc: victim@example.com\r\n" {
		t.Errorf("rfc822-headers = %q", body)
	}
}

func TestBuildDSNInjection(t *testing.T) {
	evil := "550 5.7.1 no\r\nBcc: victim@example.com\r\n\r\n--boundary\x00\x1b[31m\u2028Subject: x"
	n := spamNotice(t)
	n.OriginalHeader = readFile(t, "injection.eml")
	n.Reason = "reason\r\nBcc: victim@example.com"
	n.Disposition = "kept\r\n\r\n--x"
	n.Mailbox = "box\nTo: other@example.com"
	n.ArchiveKey = "key\r\n"
	n.Recipients[0].DiagnosticCode = evil
	raw := build(t, n)
	p := parseNotice(t, raw)

	// The malformed "--not-a-boundary" line ends what go-message can parse
	// of the original, so its Message-ID (after that line) is not used.
	if got := keys(p.top.Header.Header); !slices.Equal(got, []string{
		"Content-Type", "From", "To", "Date", "Subject", "Message-Id",
		"X-Popconn-Notice", "Auto-Submitted", "Mime-Version",
	}) {
		t.Errorf("top-level fields = %q", got)
	}
	// Neither the mailbox nor the archive key is a plain name: the Subject
	// is the label alone.
	if subj, _ := p.top.Subject(); subj != "Rejected as spam" {
		t.Errorf("Subject = %q", subj)
	}
	to, _ := p.top.AddressList("To")
	if len(to) != 1 || to[0].Address != "admin@corp.example" {
		t.Errorf("To = %v", to)
	}
	if len(p.parts) != 3 {
		t.Fatalf("%d parts", len(p.parts))
	}
	for i, want := range [][]string{
		{"Content-Transfer-Encoding", "Content-Type"},
		{"Content-Transfer-Encoding", "Content-Type"},
		{"Content-Transfer-Encoding", "Content-Type"},
	} {
		if got := keys(p.parts[i].header.Header); !slices.Equal(got, want) {
			t.Errorf("part %d fields = %q", i+1, got)
		}
	}
	g := groups(t, p.parts[1].body)
	if len(g) != 2 {
		t.Fatalf("%d delivery-status groups:\n%s", len(g), p.parts[1].body)
	}
	if v := g[1].Get("Diagnostic-Code"); v != "smtp; 550 5.7.1 no Bcc: victim@example.com --boundary [31m Subject: x" {
		t.Errorf("Diagnostic-Code = %q", v)
	}
	if got := keys(g[1]); slices.Contains(got, "Bcc") || slices.Contains(got, "Subject") {
		t.Errorf("per-recipient fields = %q", got)
	}
	// Every explanation line is one of ours: no line starts with an
	// injected field name or boundary.
	for _, line := range strings.Split(string(p.parts[0].body), "\r\n") {
		if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "To:") || strings.HasPrefix(line, "--") {
			t.Errorf("injected line %q in the explanation", line)
		}
	}
	// The original's From (whose display name decodes to a CRLF) is in
	// the attached header only.
	if strings.Contains(string(p.parts[0].body), "evil@example.com") {
		t.Errorf("explanation quotes the original's From:\n%s", p.parts[0].body)
	}
	// The original header travels whole, inside the third part's body
	// only, even its malformed "--not-a-boundary" line.
	orig := readFile(t, "injection.eml")
	if want := orig[:bytes.Index(orig, []byte("\r\n\r\n"))+2]; !bytes.Equal(p.parts[2].body, want) {
		t.Errorf("rfc822-headers =\n%q\nwant\n%q", p.parts[2].body, want)
	}
	if bytes.Count(raw, []byte("\r\nBcc:")) != 0 {
		t.Errorf("a line starting with Bcc: is in the raw notice:\n%s", raw)
	}
}

func TestBuildDSNMessageIDDeterministic(t *testing.T) {
	idOf := func(n Notice) string {
		t.Helper()
		p := parseNotice(t, build(t, n))
		id, err := p.top.MessageID()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	base := spamNotice(t)
	first := idOf(base)

	later := base
	later.Now = now.Add(48 * time.Hour)
	later.Reason = "different words"
	later.Recipients = []RecipientStatus{{Final: "other@corp.example", Action: ActionFailed, Status: "5.7.1"}}
	if got := idOf(later); got != first {
		t.Errorf("resend: Message-ID %q, first %q", got, first)
	}
	// The same message with a changed header but the same Message-ID is
	// the same message.
	touched := base
	touched.OriginalHeader = append([]byte("X-Extra: 1\r\n"), base.OriginalHeader...)
	if got := idOf(touched); got != first {
		t.Errorf("same Message-ID, other header: %q, first %q", got, first)
	}
	other := base
	other.Cause = CauseUnknownRecipient
	if got := idOf(other); got == first {
		t.Error("another cause gave the same Message-ID")
	}
	delayed := base
	delayed.Recipients = []RecipientStatus{{Final: "alice@corp.example", Action: ActionDelayed, Status: "4.7.1"}}
	if got := idOf(delayed); got == first {
		t.Error("a delay notice has the failure notice's Message-ID")
	}

	// Without a Message-ID the header decides.
	noID := base
	noID.OriginalHeader = readFile(t, "no-message-id.eml")
	a := idOf(noID)
	noID.Now = now.Add(time.Hour)
	if b := idOf(noID); a != b {
		t.Errorf("no Message-ID: %q then %q", a, b)
	}
	noID.OriginalHeader = bytes.Replace(noID.OriginalHeader, []byte("no id here"), []byte("another"), 1)
	if b := idOf(noID); a == b {
		t.Error("two different messages without Message-ID share a notice ID")
	}
	p := parseNotice(t, build(t, noID))
	if p.top.Has("In-Reply-To") || p.top.Has("References") {
		t.Error("In-Reply-To/References without an original Message-ID")
	}

	explicit := base
	explicit.MessageID = "fixed.1@corp.example"
	if got := idOf(explicit); got != "fixed.1@corp.example" {
		t.Errorf("explicit Message-ID = %q", got)
	}
}

func TestBuildDSNRejectsInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Notice)
		err    string
	}{
		{"from with name", func(n *Notice) { n.From = "PM <postmaster@corp.example>" }, `From "PM <postmaster@corp.example>" is not a bare email address`},
		{"from with CRLF", func(n *Notice) { n.From = "postmaster@corp.example\r\nBcc: x@y.example" }, "is not a bare email address"},
		{"to missing", func(n *Notice) { n.To = "" }, `To "" is not a bare email address`},
		{"to spaces", func(n *Notice) { n.To = " admin@corp.example" }, "is not a bare email address"},
		{"from quoted", func(n *Notice) { n.From = `"post master"@corp.example` }, "quoted local part"},
		{"to bad domain", func(n *Notice) { n.To = "admin@corp_x.example" }, `invalid domain "corp_x.example"`},
		{"to bare IP", func(n *Notice) { n.To = "admin@192.0.2.1" }, "invalid domain"},
		{"reporting MTA", func(n *Notice) { n.ReportingMTA = "popconn\r\nX: y" }, "reporting MTA"},
		{"reporting MTA underscore", func(n *Notice) { n.ReportingMTA = "pop_conn.corp.example" }, "reporting MTA"},
		{"reporting MTA IPv4", func(n *Notice) { n.ReportingMTA = "192.0.2.1" }, "the last label is all digits"},
		{"reporting MTA empty", func(n *Notice) { n.ReportingMTA = "" }, "reporting MTA"},
		{"received-from MTA", func(n *Notice) { n.ReceivedFromMTA = "pop isp" }, "received-from MTA"},
		{"received-from MTA bad IP", func(n *Notice) { n.ReceivedFromMTA = "192.0.2.300" }, "received-from MTA"},
		{"received-from MTA general literal", func(n *Notice) { n.ReceivedFromMTA = "[x-tag:abc]" }, "received-from MTA"},
		{"no now", func(n *Notice) { n.Now = time.Time{} }, "Now is not set"},
		{"test cause", func(n *Notice) { n.Cause = CauseTest }, `cause "test"`},
		{"no cause", func(n *Notice) { n.Cause = CauseNone }, `cause ""`},
		{"no recipients", func(n *Notice) { n.Recipients = nil }, "no recipient"},
		{"bad final", func(n *Notice) { n.Recipients[0].Final = "a b@corp.example" }, "final recipient"},
		{"final with CRLF", func(n *Notice) { n.Recipients[0].Final = "a@corp.example\r\nBcc: x@y.example" }, "final recipient"},
		{"bad original", func(n *Notice) { n.Recipients[0].Original = "nobody" }, "original recipient"},
		{"bad action", func(n *Notice) { n.Recipients[0].Action = "delivered" }, `action "delivered"`},
		{"bad status", func(n *Notice) { n.Recipients[0].Status = "5.7" }, `status "5.7"`},
		{"status with text", func(n *Notice) { n.Recipients[0].Status = "5.7.1\r\nBcc: x" }, "status"},
		{"failed with 2.x", func(n *Notice) { n.Recipients[0].Status = "2.0.0" }, "needs a 4.x.x or 5.x.x"},
		{"delayed with 5.x", func(n *Notice) { n.Recipients[0].Action = ActionDelayed }, "needs a 4.x.x status"},
		{"retry on failed", func(n *Notice) { n.Recipients[0].WillRetryUntil = now }, "only for delayed"},
		{"remote MTA", func(n *Notice) { n.Recipients[0].RemoteMTA = "exch\r\nBcc: x" }, "remote MTA"},
		{"message id", func(n *Notice) { n.MessageID = "<x@y>" }, "Message-ID"},
		{"message id CRLF", func(n *Notice) { n.MessageID = "x@y\r\nBcc: z" }, "Message-ID"},
		{"negative size", func(n *Notice) { n.Size = -1 }, "size -1"},
		{"negative size limit", func(n *Notice) { n.SizeLimit = -5 }, "size limit -5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := spamNotice(t)
			tc.modify(&n)
			var buf bytes.Buffer
			err := BuildDSN(&buf, n)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("BuildDSN = %v, want ErrInvalid with %q", err, tc.err)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written on error", buf.Len())
			}
		})
	}
}

func TestBuildDSNTruncatesHugeHeader(t *testing.T) {
	var orig bytes.Buffer
	orig.WriteString("Subject: big\r\nMessage-ID: <big@example.net>\r\n")
	for orig.Len() < MaxOriginalHeader+50000 {
		orig.WriteString("X-Filler: " + strings.Repeat("a", 100) + "\r\n")
	}
	orig.WriteString("\r\nbody\r\n")
	n := spamNotice(t)
	n.OriginalHeader = orig.Bytes()
	p := parseNotice(t, build(t, n))
	body := p.parts[2].body
	if len(body) > MaxOriginalHeader || len(body) < MaxOriginalHeader-200 || !bytes.HasSuffix(body, []byte("\r\n")) {
		t.Errorf("rfc822-headers is %d bytes", len(body))
	}
	if !bytes.Contains(p.parts[0].body, []byte("only its beginning is attached")) {
		t.Error("the explanation does not say the header was cut")
	}
}

func TestBuildDSNLongLines(t *testing.T) {
	n := spamNotice(t)
	n.OriginalHeader = []byte("Subject: " + strings.Repeat("x", 3000) + "\r\nX-Long: " + strings.Repeat("y ", 2000) + "\r\n\r\n")
	n.Recipients[0].DiagnosticCode = "smtp; 550 5.7.1 " + strings.Repeat("z", 2000)
	p := parseNotice(t, build(t, n)) // checks 998-byte lines
	if p.parts[2].header.Get("Content-Transfer-Encoding") != "quoted-printable" {
		t.Error("a header line over 998 bytes was not encoded")
	}
	if !bytes.Equal(p.parts[2].body, n.OriginalHeader[:len(n.OriginalHeader)-2]) {
		t.Error("long original header lines were changed")
	}
	if subj, _ := p.top.Subject(); subj != "Rejected as spam: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	d := groups(t, p.parts[1].body)[1].Get("Diagnostic-Code")
	if !strings.HasPrefix(d, "smtp; 550 5.7.1 zzz") || len(d) > 920 {
		t.Errorf("Diagnostic-Code is %d bytes: %.40q", len(d), d)
	}
}

func TestBuildDSNNoOriginal(t *testing.T) {
	n := spamNotice(t)
	n.OriginalHeader = nil
	p := parseNotice(t, build(t, n))
	if subj, _ := p.top.Subject(); subj != "Rejected as spam: message uid-1 from mailbox sales" {
		t.Errorf("Subject = %q", subj)
	}
	if len(p.parts) != 3 || len(p.parts[2].body) != 0 {
		t.Errorf("parts = %d, rfc822-headers %q", len(p.parts), p.parts[2].body)
	}
}

// TestBuildDSNSubject: the Subject is fixed text and names the connector
// made, never text of the original (item 4 of "nothing lost and nothing
// doubled": a Subject filter refused "Rejected as spam: [SPAM] …").
func TestBuildDSNSubject(t *testing.T) {
	tests := []struct {
		name                string
		cause               Cause
		delayed             bool
		archiveKey, mailbox string
		want                string
	}{
		{"archive key", CauseSpam, false, "sales/2025/01/06/3f9c0a1b2c3d4e5f60718293.eml", "sales",
			"Rejected as spam: message 3f9c0a1b2c3d4e5f60718293 from mailbox sales"},
		{"badmail copy", CauseBadmail, false, "badmail/sales/2025/01/06/3f9c0a1b2c3d4e5f60718293.eml", "sales",
			"Moved to badmail: message 3f9c0a1b2c3d4e5f60718293 from mailbox sales"},
		{"too large", CauseTooLarge, false, "info/2025/01/06/0a1b.eml", "info", "Too large for Exchange: message 0a1b from mailbox info"},
		{"unknown recipient", CauseUnknownRecipient, false, "k.eml", "m-1", "Unknown recipient: message k from mailbox m-1"},
		{"relay denied", CauseRelayDenied, false, "k.eml", "m_1", "Relay denied: message k from mailbox m_1"},
		{"other", CauseOther, false, "k.eml", "m.1", "Undeliverable: message k from mailbox m.1"},
		{"delayed", CauseSpam, true, "k.eml", "sales", "Delivery delayed: message k from mailbox sales"},
		{"no archive key", CauseSpam, false, "", "sales", "Rejected as spam: a message from mailbox sales"},
		{"no mailbox", CauseSpam, false, "sales/k.eml", "", "Rejected as spam: message k"},
		{"neither", CauseSpam, false, "", "", "Rejected as spam"},
		{"key with spaces", CauseSpam, false, "sales/[SPAM] buy now.eml", "sales", "Rejected as spam: a message from mailbox sales"},
		{"key with controls", CauseSpam, false, "sales/k\r\nBcc: x.eml", "sales", "Rejected as spam: a message from mailbox sales"},
		{"mailbox not a name", CauseSpam, false, "k.eml", "Verkauf & Co", "Rejected as spam: message k"},
		{"mailbox too long", CauseSpam, false, "k.eml", strings.Repeat("m", 65), "Rejected as spam: message k"},
		{"key only .eml", CauseSpam, false, "sales/.eml", "", "Rejected as spam"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := spamNotice(t)
			n.OriginalHeader = readFile(t, "spam-subject.eml")
			n.Cause, n.ArchiveKey, n.Mailbox = tc.cause, tc.archiveKey, tc.mailbox
			if tc.delayed {
				n.Recipients = []RecipientStatus{{Final: "alice@corp.example", Action: ActionDelayed, Status: "4.7.1"}}
			}
			p := parseNotice(t, build(t, n))
			if subj, err := p.top.Subject(); err != nil || subj != tc.want {
				t.Errorf("Subject = %q (%v), want %q", subj, err, tc.want)
			}
		})
	}
}

// TestBuildDSNOriginalOnlyInHeadersPart checks, for every cause, that no
// value of the original header appears anywhere in the notice but its
// text/rfc822-headers part, which holds the header whole.
func TestBuildDSNOriginalOnlyInHeadersPart(t *testing.T) {
	orig := readFile(t, "spam-subject.eml")
	wantHeader := orig[:bytes.Index(orig, []byte("\r\n\r\n"))+2]
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(orig)))
	if err != nil {
		t.Fatal(err)
	}
	// Every field value, and the parts a filter would match on. Values
	// shorter than 6 bytes ("1.0", "YES") are words the notice may well
	// hold for its own reasons.
	needles := []string{"[SPAM]", "buy now", "bulk.example", "Cheap Pills", "spam-77", "BAYES_99", "198.51.100.7"}
	for f := th.Fields(); f.Next(); {
		if v := strings.TrimSpace(f.Value()); len(v) >= 6 {
			needles = append(needles, v)
		}
	}
	parsed := message.NewInspector()
	parsed.Write(orig)
	for _, cause := range []Cause{CauseSpam, CauseUnknownRecipient, CauseRelayDenied, CauseTooLarge, CauseBadmail, CauseOther} {
		for _, form := range []string{"raw", "parsed"} {
			t.Run(string(cause)+"/"+form, func(t *testing.T) {
				n := spamNotice(t)
				n.Cause, n.Size, n.SizeLimit = cause, 31<<20, 10<<20
				n.OriginalHeader = orig
				if form == "parsed" {
					n.OriginalHeader, n.Original = nil, parsed.Summary().Header
				}
				p := parseNotice(t, build(t, n))
				if len(p.parts) != 3 || p.parts[2].ctype != "text/rfc822-headers" {
					t.Fatalf("%d parts", len(p.parts))
				}
				if !bytes.Equal(p.parts[2].body, wantHeader) || p.parts[2].header.Get("Content-Transfer-Encoding") != "7bit" {
					t.Fatalf("rfc822-headers =\n%q\nwant\n%q", p.parts[2].body, wantHeader)
				}
				// The notice as sent without the headers part's body (7bit:
				// exactly wantHeader), and each other part decoded.
				i := bytes.Index(p.raw, wantHeader)
				if i < 0 {
					t.Fatal("the original header is not in the raw notice")
				}
				outside := map[string]string{
					"notice":           string(p.raw[:i]) + string(p.raw[i+len(wantHeader):]),
					"explanation":      string(p.parts[0].body),
					"delivery-status":  string(p.parts[1].body),
					"top-level header": fieldText(p.top.Header.Header),
				}
				for where, text := range outside {
					for _, needle := range needles {
						if strings.Contains(strings.ToLower(text), strings.ToLower(needle)) {
							t.Errorf("%s holds %q of the original header", where, needle)
						}
					}
				}
			})
		}
	}
}

// fieldText is h's fields as decoded, one "Key: value" a line.
func fieldText(h textproto.Header) string {
	var b strings.Builder
	for f := h.Fields(); f.Next(); {
		b.WriteString(f.Key() + ": " + f.Value() + "\n")
	}
	return b.String()
}

// TestBuildDSNTooLarge: the too-large notice says the size and the limit
// when known (item 6 of "nothing lost and nothing doubled").
func TestBuildDSNTooLarge(t *testing.T) {
	local := &relay.Error{Op: "mail", Code: 552, Enhanced: "5.3.4",
		Message: "message size 31457280 exceeds the server's limit of 10485760 (RFC 1870); not sent", Local: true}
	tests := []struct {
		name          string
		size, limit   int64
		want, wantNot []string
	}{
		{"both known", 31457280, 10485760,
			[]string{"The message is 31457280 bytes (30.0 MiB); the server accepts at most 10485760 bytes (10.0 MiB).", "  Size: 31457280 bytes (30.0 MiB)"}, nil},
		{"size only", 31457280, 0, []string{"The message is 31457280 bytes (30.0 MiB); the server's limit is not known."}, []string{"accepts at most"}},
		{"limit only", 0, 5000, []string{"The server accepts at most 5000 bytes."}, []string{"  Size:", "The message is"}},
		{"neither", 0, 0, nil, []string{"  Size:", "The message is", "accepts at most"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := spamNotice(t)
			n.Cause = Classify(local)
			n.Recipients = []RecipientStatus{RecipientFromError("alice@corp.example", local, "", now)}
			n.Size, n.SizeLimit = tc.size, tc.limit
			p := parseNotice(t, build(t, n))
			if n.Cause != CauseTooLarge || p.top.Get("X-Popconn-Notice") != "too-large" {
				t.Errorf("cause %q, X-Popconn-Notice %q", n.Cause, p.top.Get("X-Popconn-Notice"))
			}
			if subj, _ := p.top.Subject(); subj != "Too large for Exchange: message uid-1 from mailbox sales" {
				t.Errorf("Subject = %q", subj)
			}
			text := string(p.parts[0].body)
			for _, want := range append(tc.want, "Exchange refused a message as larger than it accepts") {
				if !strings.Contains(text, want) {
					t.Errorf("explanation lacks %q:\n%s", want, text)
				}
			}
			for _, not := range tc.wantNot {
				if strings.Contains(text, not) {
					t.Errorf("explanation has %q:\n%s", not, text)
				}
			}
			if g := groups(t, p.parts[1].body); g[1].Get("Status") != "5.3.4" {
				t.Errorf("Status = %q", g[1].Get("Status"))
			}
		})
	}
}

func TestRecipientFromError(t *testing.T) {
	at := now
	tests := []struct {
		name string
		err  *relay.Error
		want RecipientStatus
	}{
		{"permanent with enhanced", &relay.Error{Op: "rcpt", Code: 550, Enhanced: "5.1.1", Message: "User unknown"},
			RecipientStatus{Action: ActionFailed, Status: "5.1.1", DiagnosticCode: "smtp; 550 5.1.1 User unknown"}},
		{"permanent without enhanced", &relay.Error{Op: "data", Code: 554, Message: "Transaction failed"},
			RecipientStatus{Action: ActionFailed, Status: "5.0.0", DiagnosticCode: "smtp; 554 Transaction failed"}},
		{"temporary reply", &relay.Error{Op: "rcpt", Code: 451, Enhanced: "4.7.1", Message: "Greylisted", Temporary: true},
			RecipientStatus{Action: ActionDelayed, Status: "4.7.1", DiagnosticCode: "smtp; 451 4.7.1 Greylisted"}},
		{"network failure", &relay.Error{Op: "connect", Message: "connection refused", Temporary: true},
			RecipientStatus{Action: ActionDelayed, Status: "4.4.1"}},
		{"local refusal", &relay.Error{Op: "mail", Message: "server lacks SMTPUTF8", Local: true},
			RecipientStatus{Action: ActionFailed, Status: "5.0.0"}},
		{"mismatched classes", &relay.Error{Op: "rcpt", Code: 550, Enhanced: "4.2.2", Message: "odd"},
			RecipientStatus{Action: ActionFailed, Status: "5.0.0", DiagnosticCode: "smtp; 550 4.2.2 odd"}},
		{"nil", nil, RecipientStatus{Action: ActionFailed, Status: "5.0.0"}},
	}
	for _, tc := range tests {
		got := RecipientFromError("a@corp.example", tc.err, "exch.corp.example", at)
		tc.want.Final, tc.want.RemoteMTA, tc.want.LastAttempt = "a@corp.example", "exch.corp.example", at
		if got != tc.want {
			t.Errorf("%s: got %+v\nwant %+v", tc.name, got, tc.want)
		}
		// Whatever the error, the result builds a valid notice.
		n := spamNotice(t)
		n.Recipients = []RecipientStatus{got}
		if err := BuildDSN(io.Discard, n); err != nil {
			t.Errorf("%s: BuildDSN: %v", tc.name, err)
		}
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"  a\r\n\tb  ", 10, "a b"},
		{"a\x00b\x1bc\x7fd\u0085e", 20, "a b c d e"},
		{"bidi\u202eevil\u2028x", 20, "bidi evil x"},
		{"bad \xff utf8", 20, "bad \uFFFD utf8"},
		{"abcdefghij", 5, "abcde…"},
		{"ab cd ef", 5, "ab cd"},
		{"\r\n", 5, ""},
	}
	for _, tc := range tests {
		if got := cleanText(tc.in, tc.max); got != tc.want {
			t.Errorf("cleanText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
	if got := asciiText("Grüße\r\n…", 20); got != "Gr??e ..." {
		t.Errorf("asciiText = %q", got)
	}
}

func TestTestMessage(t *testing.T) {
	var buf bytes.Buffer
	err := TestMessage(&buf, TestNotice{
		From: "postmaster@corp.example", To: "admin@corp.example", ReportingMTA: "popconn.corp.example", Now: now,
		Settings: []string{"notify on spam: yes", "notify on unknown recipient: no", "evil\r\nBcc: x@y.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	e, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	h := mail.Header{Header: e.Header}
	if got := keys(h.Header.Header); !slices.Equal(got, []string{
		"From", "To", "Date", "Subject", "Message-Id", "X-Popconn-Notice", "Auto-Submitted", "Mime-Version",
		"Content-Transfer-Encoding", "Content-Type",
	}) {
		t.Errorf("fields = %q", got)
	}
	if ct, params, _ := h.ContentType(); ct != "text/plain" || params["charset"] != "utf-8" {
		t.Errorf("Content-Type = %s %v", ct, params)
	}
	if s, _ := h.Subject(); s != "popconnector test notification from popconn.corp.example" {
		t.Errorf("Subject = %q", s)
	}
	if v := h.Get("X-Popconn-Notice"); v != "test" {
		t.Errorf("X-Popconn-Notice = %q", v)
	}
	from, _ := h.AddressList("From")
	to, _ := h.AddressList("To")
	if len(from) != 1 || from[0].Address != "postmaster@corp.example" || len(to) != 1 || to[0].Address != "admin@corp.example" {
		t.Errorf("From %v To %v", from, to)
	}
	id, _ := h.MessageID()
	if !strings.HasPrefix(id, "popconn.test.") || !strings.HasSuffix(id, "@corp.example") {
		t.Errorf("Message-ID = %q", id)
	}
	body, _ := io.ReadAll(e.Body)
	for _, want := range []string{
		"This is a test notification from popconnector on popconn.corp.example, sent Mon, 03 Jun 2024 10:00:00 +0000.\r\n",
		"  notify on spam: yes\r\n", "  notify on unknown recipient: no\r\n", "  evil Bcc: x@y.example\r\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	for _, line := range bytes.Split(raw, []byte("\r\n")) {
		if bytes.HasPrefix(line, []byte("Bcc:")) {
			t.Errorf("injected line %q", line)
		}
	}
	// Invalid input writes nothing.
	buf.Reset()
	if err := TestMessage(&buf, TestNotice{From: "postmaster", To: "a@corp.example", ReportingMTA: "x.example", Now: now}); !errors.Is(err, ErrInvalid) || buf.Len() != 0 {
		t.Errorf("TestMessage(bad From) = %v, %d bytes", err, buf.Len())
	}
	if err := TestMessage(&buf, TestNotice{From: "p@corp.example", To: "a@corp.example", ReportingMTA: "x.example"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("TestMessage(no Now) = %v", err)
	}
}

func BenchmarkBuildDSN(b *testing.B) {
	typical := readFile(b, "spam.eml")
	var big bytes.Buffer
	for big.Len() < 2*MaxOriginalHeader {
		big.WriteString("X-Filler: caf\xc3\xa9 " + strings.Repeat("a", 100) + "\r\n")
	}
	for _, bc := range []struct {
		name string
		orig []byte
	}{{"typical", typical}, {"max-8bit-header", big.Bytes()}} {
		b.Run(bc.name, func(b *testing.B) {
			e := &relay.Error{Op: "data", Code: 550, Enhanced: "5.7.1", Message: "Message rejected as spam by Content Filtering."}
			n := Notice{
				From: "postmaster@corp.example", To: "admin@corp.example", ReportingMTA: "popconn.corp.example",
				OriginalHeader: bc.orig, Cause: CauseSpam, Now: now,
				Recipients: []RecipientStatus{RecipientFromError("alice@corp.example", e, "exch.corp.example", now)},
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := BuildDSN(io.Discard, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMTANames: Received-From-MTA and Remote-MTA take a host name, an IP
// address or an address literal (package mailaddr's rules).
func TestMTANames(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"pop.isp.example", true},
		{"pop.isp.example.", true},
		{"exchange", true},
		{"192.0.2.1", true},
		{"2001:db8::1", true},
		{"[192.0.2.1]", true},
		{"[IPv6:2001:db8::1]", true},
		{"", false},
		{"pop_3.isp.example", false},
		{"[2001:db8::1]", false},
		{"[pop.isp.example]", false},
		{"192.0.2.300", false},
		{"pop isp", false},
		{"::g", false},
	} {
		if got := validMTAName(tt.name); got != tt.ok {
			t.Errorf("validMTAName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}
