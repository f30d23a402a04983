package reliability

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The hostile corpus: messages that break one rule each (or several), every
// one with a category, an expected outcome and a record of what Dovecot
// serves for it.
//
//   - testdata/hostile/<name>.eml are written by WriteHostileCorpus from
//     hostileTable. Messages too large to commit (over ~1 MB) are made by
//     GeneratedHostile at test time.
//   - testdata/hostile/MANIFEST.tsv (manifest.go) has one row per case,
//     the generated ones included but for the big message, whose size
//     depends on the options: name, category, outcome and expect come from
//     hostileTable; list_size, served_size, served_sha256 and served are
//     what a real Dovecot lists and a raw RETR returns after dot-unstuffing
//     (rawpop3.go, not package pop3), and how that differs from the stored
//     bytes ("served unchanged", "bare LF served as CRLF", "final CRLF
//     added, LIST is 2 octets less", "first line's dot not stuffed: 1 octet
//     short of LIST").
//
// After changing hostileTable, rewrite both in one run (it starts Dovecot):
//
//	POPCONN_INTEGRATION=1 go test ./internal/reliability -run 'TestHostileCorpus(UpToDate|Served)' -update
//
// TestHostileCorpusServed and the corpus scenario compare Dovecot with the
// manifest on every run, so a Dovecot that serves a case differently fails
// naming the case; TestHostileCorpusUpToDate compares the files and the
// manifest's own columns with the generator.
//
// The outcomes (Outcome) are what the connector must do with each case when
// the mailbox's undeliverable action is "badmail".
//
//go:embed testdata/hostile/*.eml testdata/hostile/MANIFEST.tsv
var hostileFS embed.FS

// HostileCorpus returns the committed hostile messages, by file name.
func HostileCorpus() (names []string, msgs [][]byte, err error) {
	paths, err := fs.Glob(hostileFS, "testdata/hostile/*.eml")
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(paths)
	for _, p := range paths {
		b, err := hostileFS.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		names = append(names, filepath.Base(p))
		msgs = append(msgs, b)
	}
	return names, msgs, nil
}

// WriteHostileCorpus writes the committed corpus into dir.
func WriteHostileCorpus(dir string) error {
	for _, c := range hostileTable() {
		if err := os.WriteFile(filepath.Join(dir, c.name+".eml"), c.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Outcome is what the connector must do with a hostile message.
type Outcome string

const (
	// Relayed: Exchange gets the bytes Dovecot served, with the connector's
	// Received: field in front, a Message-ID field before that when the
	// header has none, and bare LF sent as CRLF (internal/relay; a bare CR
	// passes unchanged). Nothing else may change.
	Relayed Outcome = "relayed"
	// Quarantined: set aside under the archive's badmail/ prefix with a
	// reason, and deleted from the POP3 server; never relayed.
	Quarantined Outcome = "quarantined"
	// Held: what the server sends differs from its LIST size. Archived,
	// neither relayed nor deleted, and fetched again; after four fetches of
	// the same bytes the undeliverable action applies (badmail: copied
	// there with a reason giving the difference in octets, the postmaster
	// told, deleted from the server).
	Held Outcome = "held"
	// Kept: held, but the fetch stops short and leaves the POP3 session
	// out of step (a first line of one lone "." the server does not
	// stuff, read as the end of the message): the rest of the message is
	// on the server only. After four fetches it stays on the server for
	// good, the postmaster told once; never relayed, never deleted, never
	// set aside (deleting it would lose the rest).
	Kept Outcome = "kept"
)

// The categories of the corpus; TestHostileCorpusUpToDate requires a case
// in each.
const (
	catStructure = "structure"  // missing, empty or malformed header sections
	catEmpty     = "empty"      // empty and one-byte messages
	catLineEnds  = "line-ends"  // bare CR, bare LF, mixed line ends
	catBytes     = "bytes"      // NUL, control bytes, binary
	catLong      = "long"       // long lines, huge headers
	catMIME      = "mime"       // broken MIME
	catNesting   = "nesting"    // deep multipart and message/rfc822 nesting
	catDots      = "dots"       // dot lines on both protocols
	catSmuggling = "smuggling"  // SMTP smuggling shapes
	catMessageID = "message-id" // missing, duplicate and odd Message-IDs
	catEncoding  = "encoding"   // raw UTF-8 and broken encodings
	catEnvelope  = "envelope"   // odd Return-Path and From
	catLoop      = "loop"       // the connector's own trace fields
)

// Categories lists every category in report order.
func Categories() []string {
	return []string{catStructure, catEmpty, catLineEnds, catBytes, catLong, catMIME, catNesting,
		catDots, catSmuggling, catMessageID, catEncoding, catEnvelope, catLoop}
}

type hostileMsg struct {
	name     string
	category string
	outcome  Outcome
	// reason, for a quarantined case, is a phrase the badmail reason must
	// contain.
	reason string
	data   []byte
}

// rigHostname is the rig's Settings.Hostname: the "by" of the connector's
// own Received fields, which the loop cases carry.
const rigHostname = "popconn.test"

// crlf joins lines with CRLF and ends with CRLF.
func crlf(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// hdr is a plain header block for messages whose trouble is elsewhere.
func hdr(name string, extra ...string) []string {
	h := []string{
		"From: Hostile Sender <hostile@isp.example>",
		"To: sales@isp.example",
		"Subject: hostile " + name,
		"Message-ID: <hostile-" + name + "@isp.example>",
		"Date: Mon, 02 Jun 2025 10:00:00 +0000",
	}
	return append(h, extra...)
}

func msg(name string, extraHeaders []string, body ...string) []byte {
	lines := append(hdr(name, extraHeaders...), "")
	return crlf(append(lines, body...)...)
}

// mimeMsg is msg with a MIME-Version and the given Content-Type.
func mimeMsg(name, contentType string, extra []string, body ...string) []byte {
	return msg(name, append([]string{"MIME-Version: 1.0", "Content-Type: " + contentType}, extra...), body...)
}

// nestedMultipart nests depth multiparts, each the only part of the one
// around it, with a text part at the bottom; every boundary is closed.
func nestedMultipart(name string, depth int) []byte {
	var body []string
	for i := 0; i < depth; i++ {
		body = append(body, fmt.Sprintf("--n%d", i), fmt.Sprintf(`Content-Type: multipart/mixed; boundary="n%d"`, i+1), "")
	}
	body = append(body, fmt.Sprintf("--n%d", depth), "Content-Type: text/plain", "", "deep", fmt.Sprintf("--n%d--", depth))
	for i := depth - 1; i >= 0; i-- {
		body = append(body, fmt.Sprintf("--n%d--", i))
	}
	return mimeMsg(name, `multipart/mixed; boundary="n0"`, nil, body...)
}

// nestedRFC822 nests depth message/rfc822 bodies, each a whole message
// whose body is the next one.
func nestedRFC822(name string, depth int) []byte {
	var body []string
	for i := 0; i < depth; i++ {
		body = append(body, fmt.Sprintf("Subject: level %d", i+1), "MIME-Version: 1.0", "Content-Type: message/rfc822", "")
	}
	body = append(body, "Subject: bottom", "Content-Type: text/plain", "", "deep")
	return mimeMsg(name, "message/rfc822", nil, body...)
}

// ownTrace is a Received field as the rig's connector writes it, so that a
// message carrying n of them has looped through it n times.
func ownTrace(n int, folded bool) []string {
	var out []string
	for i := 0; i < n; i++ {
		if folded {
			out = append(out, fmt.Sprintf("Received: from pop.isp.example (POP3 mailbox sales)\r\n\tBY %s (POPCONNECTOR) with POP3 id <loop%d>\r\n\tfor <sales@corp.example>; Mon, 2 Jun 2025 10:00:0%d +0000", strings.ToUpper(rigHostname), i, i))
		} else {
			out = append(out, fmt.Sprintf("Received: from pop.isp.example (POP3 mailbox sales) by %s (popconnector) with POP3 id <loop%d> for <sales@corp.example>; Mon, 2 Jun 2025 10:00:0%d +0000", rigHostname, i, i))
		}
	}
	return out
}

func hostileTable() []hostileMsg {
	rng := rand.New(rand.NewPCG(2025, 6))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	var out []hostileMsg
	cat := ""
	add := func(name string, data []byte) {
		out = append(out, hostileMsg{name: name, category: cat, outcome: Relayed, data: data})
	}
	held := func(name string, data []byte) {
		out = append(out, hostileMsg{name: name, category: cat, outcome: Held, data: data})
	}
	kept := func(name string, data []byte) {
		out = append(out, hostileMsg{name: name, category: cat, outcome: Kept, data: data})
	}
	quarantine := func(name, reason string, data []byte) {
		out = append(out, hostileMsg{name: name, category: cat, outcome: Quarantined, reason: reason, data: data})
	}

	cat = catStructure
	add("no-headers", crlf("just a body line, no header at all", "and a second one"))
	add("empty-header-section", crlf("", "body after an empty header section"))
	add("headers-only-no-blank", crlf(hdr("headers-only-no-blank")...))
	add("headers-only-with-blank", crlf(append(hdr("headers-only-with-blank"), "")...))
	add("header-without-colon", crlf("This line is not a header", "From: a@isp.example", "", "body"))
	add("header-space-before-colon", crlf("From : a@isp.example", "Subject : spaced", "", "body"))
	add("leading-continuation-line", crlf(" folded line before any field", "From: a@isp.example", "", "body"))
	add("no-final-crlf", []byte(strings.Join(append(hdr("no-final-crlf"), "", "last line has no line break"), "\r\n")))

	cat = catEmpty
	add("empty", nil)
	add("only-crlf", []byte("\r\n"))
	add("one-byte-x", []byte("x"))
	add("one-byte-lf", []byte("\n"))
	add("one-byte-cr", []byte("\r"))
	add("one-byte-nul", []byte("\x00"))
	// Dovecot 2.3 does not dot-stuff a message's first line (RFC 1939 §3
	// asks it for every line): "." is served as the terminator.
	kept("one-byte-dot", []byte("."))

	cat = catLineEnds
	add("bare-lf", []byte(strings.Join(append(hdr("bare-lf"), "", "unix line ends", "everywhere"), "\n")+"\n"))
	add("mixed-crlf-lf", append(msg("mixed-crlf-lf", nil, "crlf line"), []byte("lf line\nanother lf line\ncrlf again\r\n")...))
	add("bare-cr", []byte(strings.Join(append(hdr("bare-cr"), "", "old mac line ends", "everywhere"), "\r")+"\r"))
	add("bare-cr-in-body", msg("bare-cr-in-body", nil, "a line\rwith a bare CR inside", "and\r\rtwo"))
	add("cr-cr-lf", msg("cr-cr-lf", nil, "line ending CR CR LF\r", "next line"))
	add("lf-cr", msg("lf-cr", nil, "line with LF CR inside\n\rrest", "end"))
	add("mixed-all-three", []byte(strings.Join(hdr("mixed-all-three"), "\n")+"\r\n\r\ncrlf\rcr\nlf\r\n\n\r\r\nend"))
	add("bare-lf-header-crlf-body", append([]byte(strings.Join(hdr("bare-lf-header-crlf-body"), "\n")+"\n\n"), crlf("body with", "CRLF line ends")...))

	cat = catBytes
	add("nul-in-body", msg("nul-in-body", nil, "a NUL \x00 in the body", "\x00\x00\x00"))
	add("nul-in-header", msg("nul-in-header", []string{"X-Null: before\x00after"}, "body"))
	add("nul-field-name", msg("nul-field-name", []string{"X-\x00Name: value"}, "body"))
	add("control-chars-header", msg("control-chars-header", []string{"X-Ctl: \x01\x02\x03\x07\x1b[31m\x7f"}, "body"))
	add("control-chars-body", msg("control-chars-body", nil, "\x01\x02\x03\x04\x05\x06\x07\x08\t\x0b\x0c\x0e\x0f", "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f"))
	add("c1-controls", msg("c1-controls", []string{"X-C1: \x80\x85\x8d\x9b\x9f"}, "C1 controls \x80\x85\x8d\x9b\x9f in the body"))
	add("binary-garbage", randBytes(4096))
	add("binary-after-header", append(msg("binary-after-header", []string{"MIME-Version: 1.0", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: binary"}), randBytes(4096)...))

	cat = catLong
	add("line-2500", msg("line-2500", nil, strings.Repeat("x", 2500)))
	add("line-10000", msg("line-10000", nil, strings.Repeat("0123456789", 1000)))
	add("header-line-3000", msg("header-line-3000", []string{"X-Long: " + strings.Repeat("h", 3000)}, "body"))
	add("subject-line-998", msg("subject-line-998", []string{"X-Exactly-998: " + strings.Repeat("s", 998-len("X-Exactly-998: "))}, "the X-Exactly-998 field is one 998-octet line"))
	folded := []string{"X-Folded: start"}
	for i := 0; i < 500; i++ {
		folded = append(folded, fmt.Sprintf("\tcontinuation %d", i))
	}
	add("header-folded-500", msg("header-folded-500", folded, "body"))
	many := []string{}
	for i := 0; i < 1000; i++ {
		many = append(many, fmt.Sprintf("X-Field-%d: value %d", i, i))
	}
	add("fields-1000", msg("fields-1000", many, "body"))
	rcvd := []string{}
	for i := 0; i < 300; i++ {
		rcvd = append(rcvd, fmt.Sprintf("Received: from hop%d.example by hop%d.example; Mon, 02 Jun 2025 10:00:00 +0000", i, i+1))
	}
	add("received-300", msg("received-300", rcvd, "body after 300 hops"))
	to := []string{}
	for i := 0; i < 2000; i++ {
		to = append(to, fmt.Sprintf("user%d@isp.example", i))
	}
	add("to-2000-addresses", crlf("From: a@isp.example", "To: "+strings.Join(to, ", "), "Subject: long To", "", "body"))

	cat = catMIME
	add("mime-unclosed-boundary", mimeMsg("mime-unclosed-boundary", `multipart/mixed; boundary="b1"`, nil,
		"--b1", "Content-Type: text/plain", "", "part one", "--b1", "Content-Type: text/plain", "", "part two, never closed"))
	add("mime-unclosed-nested", mimeMsg("mime-unclosed-nested", `multipart/mixed; boundary="outer"`, nil,
		"--outer", `Content-Type: multipart/alternative; boundary="inner"`, "", "--inner", "Content-Type: text/plain", "", "inner part, inner never closed", "--outer--"))
	add("mime-boundary-in-preamble", mimeMsg("mime-boundary-in-preamble", `multipart/mixed; boundary="b2"`, nil,
		"preamble mentioning --b2 mid-line", "--b2-- looks like a close but has text after it", "--b2", "Content-Type: text/plain", "", "the only part", "--b2--"))
	add("mime-no-boundary-param", mimeMsg("mime-no-boundary-param", "multipart/mixed", nil, "--x", "", "part", "--x--"))
	add("mime-empty-boundary", mimeMsg("mime-empty-boundary", `multipart/mixed; boundary=""`, nil, "--", "", "part", "----"))
	add("mime-wrong-boundary", mimeMsg("mime-wrong-boundary", `multipart/mixed; boundary="right"`, nil, "--wrong", "", "part", "--wrong--"))
	add("mime-boundary-800", mimeMsg("mime-boundary-800", `multipart/mixed; boundary="`+strings.Repeat("b", 800)+`"`, nil,
		"--"+strings.Repeat("b", 800), "", "part", "--"+strings.Repeat("b", 800)+"--"))
	add("mime-content-type-garbage", mimeMsg("mime-content-type-garbage", `multipart/;;; boundary==="a"; charset`, nil, "--a", "", "part", "--a--"))
	add("base64-broken", mimeMsg("base64-broken", "text/plain", []string{"Content-Transfer-Encoding: base64"}, "!!!not*base64$$$", "===="))
	add("base64-with-garbage", mimeMsg("base64-with-garbage", "application/octet-stream", []string{"Content-Transfer-Encoding: base64"},
		"SGVsbG8g\x00d29ybGQ=", "....", "SGVs bG8=%%%", "=Zm9v", "Zm9vYmFy====Zm9v"))
	add("qp-broken", mimeMsg("qp-broken", "text/plain", []string{"Content-Transfer-Encoding: quoted-printable"}, "=ZZ=\r=", "soft break at end ="))
	add("cte-unknown", mimeMsg("cte-unknown", "text/plain", []string{"Content-Transfer-Encoding: x-rot13-squared"}, "encoded how?"))
	add("cte-7bit-with-8bit", mimeMsg("cte-7bit-with-8bit", "text/plain; charset=utf-8", []string{"Content-Transfer-Encoding: 7bit"}, "claims 7bit: Grüße ✉"))
	add("cte-base64-on-multipart", mimeMsg("cte-base64-on-multipart", `multipart/mixed; boundary="b3"`, []string{"Content-Transfer-Encoding: base64"},
		"--b3", "", "part", "--b3--"))
	add("charset-bogus", mimeMsg("charset-bogus", "text/plain; charset=x-no-such-charset", nil, "body"))

	cat = catNesting
	add("mime-nested-60", nestedMultipart("mime-nested-60", 60))
	add("mime-nested-100", nestedMultipart("mime-nested-100", 100))
	add("mime-nested-1000", nestedMultipart("mime-nested-1000", 1000))
	add("rfc822-nested-100", nestedRFC822("rfc822-nested-100", 100))
	add("rfc822-nested-1000", nestedRFC822("rfc822-nested-1000", 1000))

	cat = catDots
	add("lone-dot-line", msg("lone-dot-line", nil, "before", ".", "after the lone dot"))
	add("dot-lines", msg("dot-lines", nil, ".", "..", "...", ". space", ".\t", ".x"))
	add("ends-with-dot-line", msg("ends-with-dot-line", nil, "last line is a dot", "."))
	add("ends-with-dot-no-crlf", []byte(strings.Join(append(hdr("ends-with-dot-no-crlf"), "", "final dot without CRLF", "."), "\r\n")))
	add("body-starts-with-dot", msg("body-starts-with-dot", nil, ".the first body line starts with a dot"))
	// The first line of the message itself: Dovecot 2.3 sends it
	// unstuffed, so a client reads one octet fewer than LIST said (or, for
	// a lone ".", the terminator, and the rest of the message as if it
	// were the next replies).
	kept("only-dot", []byte(".\r\n"))
	held("first-line-dot-text", []byte(".abc first line starts with a dot\r\nSubject: x\r\n\r\nbody\r\n"))
	held("first-line-double-dot", []byte("..two dots first\r\nSubject: x\r\n\r\nbody\r\n"))
	kept("first-line-lone-dot", []byte(".\r\nSubject: first line is a lone dot\r\n\r\nbody\r\n"))

	cat = catSmuggling
	// Shapes that some SMTP servers take for the end of DATA (SMTP
	// smuggling, CVE-2023-51764/51765/51766): a client that passes them
	// through unstuffed lets the rest become commands.
	add("smuggle-lf-dot-lf", msg("smuggle-lf-dot-lf", nil, "text\n.\nMAIL FROM:<evil@attacker.example>"))
	add("smuggle-lf-dot-crlf", msg("smuggle-lf-dot-crlf", nil, "text\n.\r\nMAIL FROM:<evil@attacker.example>", "RCPT TO:<victim@corp.example>", "DATA", "smuggled"))
	add("smuggle-crlf-dot-lf", msg("smuggle-crlf-dot-lf", nil, "text", ".\nMAIL FROM:<evil@attacker.example>"))
	add("smuggle-cr-dot-cr", msg("smuggle-cr-dot-cr", nil, "text\r.\rMAIL FROM:<evil@attacker.example>"))
	add("smuggle-cr-dot-lf", msg("smuggle-cr-dot-lf", nil, "text\r.\nMAIL FROM:<evil@attacker.example>"))
	add("smuggle-cr-dot-crlf", msg("smuggle-cr-dot-crlf", nil, "text\r.\r\nMAIL FROM:<evil@attacker.example>"))
	add("smuggle-crlf-dot-cr", msg("smuggle-crlf-dot-cr", nil, "text", ".\rMAIL FROM:<evil@attacker.example>"))
	add("smuggle-dot-then-commands", msg("smuggle-dot-then-commands", nil, "text", ".", "MAIL FROM:<evil@attacker.example>", "RCPT TO:<victim@corp.example>", "DATA", "From: ceo@corp.example", "", "smuggled", ".", "QUIT"))
	add("crlf-lf-dot", msg("crlf-lf-dot", nil, "before", "\n.\nafter a bare-LF dot line"))

	cat = catMessageID
	add("missing-message-id", crlf("From: a@isp.example", "To: sales@isp.example", "Subject: no Message-ID", "", "body"))
	add("duplicate-message-id", msg("duplicate-message-id", []string{"Message-ID: <second@isp.example>"}, "body"))
	add("empty-message-id", crlf("From: a@isp.example", "Message-ID:", "Subject: empty Message-ID", "", "body"))
	add("blank-message-id", crlf("From: a@isp.example", "Message-ID:    \t", "Subject: Message-ID of blanks", "", "body"))
	add("message-id-no-brackets", crlf("From: a@isp.example", "Message-ID: plain-id@isp.example", "", "body"))
	add("message-id-1000", crlf("From: a@isp.example", "Message-ID: <"+strings.Repeat("i", 1000)+"@isp.example>", "Subject: a 1000-octet Message-ID", "", "body"))
	add("message-id-spaces", crlf("From: a@isp.example", "Message-ID: < spaced id @ isp.example >", "", "body"))
	add("message-id-utf8", crlf("From: a@isp.example", "Message-ID: <grüße-✉@müller.example>", "", "body"))
	add("message-id-folded", crlf("From: a@isp.example", "Message-ID:", " <folded@isp.example>", "", "body"))
	add("message-id-lowercase-name", crlf("From: a@isp.example", "message-id: <lower@isp.example>", "", "body"))
	add("same-message-id-a", crlf("From: a@isp.example", "Message-ID: <shared@isp.example>", "Subject: first of two with one Message-ID", "", "body A"))
	add("same-message-id-b", crlf("From: b@isp.example", "Message-ID: <shared@isp.example>", "Subject: second of two with one Message-ID", "", "body B"))
	add("message-id-in-body-only", crlf("From: a@isp.example", "Subject: the only Message-ID is in the body", "", "Message-ID: <body@isp.example>"))

	cat = catEncoding
	add("8bit-header-latin1", msg("8bit-header-latin1", []string{"X-Latin1: Gr\xfc\xdfe aus M\xfcnchen"}, "body"))
	add("8bit-subject-utf8", crlf("From: a@isp.example", "Subject: Grüße aus München ✉", "", "body"))
	add("invalid-utf8-header", msg("invalid-utf8-header", []string{"X-Bad: \xff\xfe\xc3\x28 \xe2\x28\xa1"}, "body"))
	add("utf8-overlong-surrogate", msg("utf8-overlong-surrogate", []string{"X-Overlong: \xc0\xaf \xe0\x80\xaf \xed\xa0\x80 \xf4\x90\x80\x80"}, "overlong \xc0\xae\xc0\xae/ and a surrogate \xed\xb2\x80"))
	add("utf8-display-name", crlf("From: Jörg Müller <joerg@isp.example>", "Subject: utf8 display name", "", "body"))
	add("utf8-field-name", msg("utf8-field-name", []string{"X-Grüße: a field name that is not ASCII"}, "body"))
	add("8bit-body-no-mime", msg("8bit-body-no-mime", nil, "Gr\xfc\xdfe \xe9\xe8 8-bit body without MIME headers"))
	add("utf8-bom", append([]byte("\xef\xbb\xbf"), msg("utf8-bom", nil, "starts with a BOM")...))
	add("encoded-word-broken-base64", msg("encoded-word-broken-base64", []string{"X-Word: =?utf-8?B?!!!not base64?=", "Comments: =?utf-8?B?R3LDvMOf?"}, "body"))
	add("encoded-word-broken-qp", msg("encoded-word-broken-qp", []string{"X-Word: =?iso-8859-1?Q?Gr=FC=Z=DFe?= =?utf-8?Q?=E2=9C?="}, "body"))
	add("encoded-word-unknown-charset", msg("encoded-word-unknown-charset", []string{"X-Word: =?x-klingon?Q?Qapla'?= =?utf-8?X?unknown-encoding?="}, "body"))
	add("encoded-word-unterminated", crlf("From: =?utf-8?B?SsO2cmc=", "Subject: =?utf-8?Q?never_closed", "Message-ID: <unterminated@isp.example>", "", "body"))

	cat = catEnvelope
	add("return-path-null", msg("return-path-null", []string{"Return-Path: <>"}, "a bounce"))
	add("return-path-garbage", msg("return-path-garbage", []string{"Return-Path: <<<not an address>>>"}, "body"))
	add("from-group-syntax", crlf("From: undisclosed-recipients:;", "Subject: group From", "", "body"))
	add("from-multiple", crlf("From: a@isp.example, b@isp.example", "Subject: two authors", "", "body"))
	add("x-test-seq-header", msg("x-test-seq-header", []string{"X-Test-Seq: 1"}, "claims to be generated message 1"))
	// The envelope needs SMTPUTF8, which the rig's SMTP side (like an
	// Exchange receive connector without it) does not offer: the relay
	// refuses it locally with a permanent 553 5.6.7.
	quarantine("utf8-address-from", "5.6.7", crlf("From: jörg@müller.example", "Subject: utf8 address", "", "needs SMTPUTF8"))

	cat = catLoop
	// Settings.MaxTraceHops is 3 in the rig (the default): a message that
	// already passed the connector 3 times goes once more; 4 is a loop.
	add("loop-3-hops", msg("loop-3-hops", ownTrace(3, false), "passed this connector three times"))
	quarantine("loop-4-hops", "mail loop (5.4.6)", msg("loop-4-hops", ownTrace(4, false), "passed this connector four times"))
	quarantine("loop-6-hops-folded", "mail loop (5.4.6)", msg("loop-6-hops-folded", ownTrace(6, true), "six folded, upper-case trace fields"))
	add("loop-other-host", msg("loop-other-host", []string{
		"Received: from a by other.example (popconnector) with POP3 id <o1>; Mon, 2 Jun 2025 10:00:00 +0000",
		"Received: from a by other.example (popconnector) with POP3 id <o2>; Mon, 2 Jun 2025 10:00:00 +0000",
		"Received: from a by other.example (popconnector) with POP3 id <o3>; Mon, 2 Jun 2025 10:00:00 +0000",
		"Received: from a by other.example (popconnector) with POP3 id <o4>; Mon, 2 Jun 2025 10:00:00 +0000",
	}, "four hops through another connector's host: not a loop here"))
	return out
}

// GeneratedHostile returns the hostile messages made at test time: 10,000
// header fields, a 2 MiB header (beyond the inspector's MaxHeaderBytes), one
// 1 MiB line, and a message of big bytes. All but the last are in the
// manifest; the big one's size depends on the options.
func GeneratedHostile(big int64) (names []string, msgs [][]byte) {
	var b bytes.Buffer
	b.Write(crlf(hdr("fields-10000")...))
	for i := 0; i < 10_000; i++ {
		fmt.Fprintf(&b, "X-Field-%05d: value %d\r\n", i, i)
	}
	b.WriteString("\r\nbody\r\n")
	names, msgs = append(names, "gen-fields-10000"), append(msgs, b.Bytes())

	var h bytes.Buffer
	h.Write(crlf(hdr("header-2mib")...))
	for h.Len() < 2<<20 {
		fmt.Fprintf(&h, "X-Filler-%07d: %s\r\n", h.Len(), strings.Repeat("f", 60))
	}
	h.WriteString("\r\nbody after a 2 MiB header\r\n")
	names, msgs = append(names, "gen-header-2mib"), append(msgs, h.Bytes())

	line := msg("line-1mib", nil, strings.Repeat("L", 1<<20))
	names, msgs = append(names, "gen-line-1mib"), append(msgs, line)

	names = append(names, fmt.Sprintf("gen-big-%dmib", big>>20))
	msgs = append(msgs, bigBody(big))
	return names, msgs
}

// generatedCategory is the category of every generated message.
const generatedCategory = catLong

// bigBody is a message of size bytes: a header, then CRLF lines of
// deterministic text with an occasional dot-leading line.
func bigBody(size int64) []byte {
	var b bytes.Buffer
	b.Grow(int(size) + 200)
	b.Write(msg(fmt.Sprintf("big-%d", size), []string{"MIME-Version: 1.0", "Content-Type: text/plain"}))
	chunk := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog 0123456789. ", 1) + "\r\n")
	for i := 0; int64(b.Len()) < size; i++ {
		if i%1000 == 0 {
			b.WriteString(".leading dot line\r\n")
		}
		b.Write(chunk)
	}
	return b.Bytes()
}
