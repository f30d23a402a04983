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

// The committed corpus is testdata/hostile/*.eml, written by
// WriteHostileCorpus from hostileTable (regenerate with
// `go test ./internal/reliability -run TestHostileCorpusUpToDate -update`).
// Messages too large to commit are made by GeneratedHostile at test time.
//
//go:embed testdata/hostile/*.eml
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

type hostileMsg struct {
	name string
	data []byte
}

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
	add := func(name string, data []byte) { out = append(out, hostileMsg{name, data}) }

	// Structure.
	add("no-headers", crlf("just a body line, no header at all", "and a second one"))
	add("empty-header-section", crlf("", "body after an empty header section"))
	add("headers-only-no-blank", crlf(hdr("headers-only-no-blank")...))
	add("headers-only-with-blank", crlf(append(hdr("headers-only-with-blank"), "")...))
	add("empty", nil)
	add("only-crlf", []byte("\r\n"))
	add("only-dot", []byte(".\r\n"))
	add("header-without-colon", crlf("This line is not a header", "From: a@isp.example", "", "body"))
	add("header-space-before-colon", crlf("From : a@isp.example", "Subject : spaced", "", "body"))
	add("leading-continuation-line", crlf(" folded line before any field", "From: a@isp.example", "", "body"))
	add("no-final-crlf", []byte(strings.Join(append(hdr("no-final-crlf"), "", "last line has no line break"), "\r\n")))

	// Line endings.
	add("bare-lf", []byte(strings.Join(append(hdr("bare-lf"), "", "unix line ends", "everywhere"), "\n")+"\n"))
	add("mixed-crlf-lf", append(msg("mixed-crlf-lf", nil, "crlf line"), []byte("lf line\nanother lf line\ncrlf again\r\n")...))
	add("bare-cr", []byte(strings.Join(append(hdr("bare-cr"), "", "old mac line ends", "everywhere"), "\r")+"\r"))
	add("bare-cr-in-body", msg("bare-cr-in-body", nil, "a line\rwith a bare CR inside", "and\r\rtwo"))
	add("cr-cr-lf", msg("cr-cr-lf", nil, "line ending CR CR LF\r", "next line"))
	add("lf-cr", msg("lf-cr", nil, "line with LF CR inside\n\rrest", "end"))
	add("crlf-lf-dot", msg("crlf-lf-dot", nil, "before", "\n.\nafter a bare-LF dot line"))

	// Bytes.
	add("nul-in-body", msg("nul-in-body", nil, "a NUL \x00 in the body", "\x00\x00\x00"))
	add("nul-in-header", msg("nul-in-header", []string{"X-Null: before\x00after"}, "body"))
	add("8bit-header-latin1", msg("8bit-header-latin1", []string{"X-Latin1: Gr\xfc\xdfe aus M\xfcnchen"}, "body"))
	add("8bit-subject-utf8", crlf("From: a@isp.example", "Subject: Grüße aus München ✉", "", "body"))
	add("invalid-utf8-header", msg("invalid-utf8-header", []string{"X-Bad: \xff\xfe\xc3\x28 \xe2\x28\xa1"}, "body"))
	add("utf8-display-name", crlf("From: Jörg Müller <joerg@isp.example>", "Subject: utf8 display name", "", "body"))
	add("utf8-address-from", crlf("From: jörg@müller.example", "Subject: utf8 address", "", "needs SMTPUTF8"))
	add("8bit-body-no-mime", msg("8bit-body-no-mime", nil, "Gr\xfc\xdfe \xe9\xe8 8-bit body without MIME headers"))
	add("control-chars-header", msg("control-chars-header", []string{"X-Ctl: \x01\x02\x03\x07\x1b[31m\x7f"}, "body"))
	add("binary-garbage", randBytes(4096))
	add("utf8-bom", append([]byte("\xef\xbb\xbf"), msg("utf8-bom", nil, "starts with a BOM")...))

	// Long lines and many fields.
	add("line-2500", msg("line-2500", nil, strings.Repeat("x", 2500)))
	add("line-10000", msg("line-10000", nil, strings.Repeat("0123456789", 1000)))
	add("header-line-3000", msg("header-line-3000", []string{"X-Long: " + strings.Repeat("h", 3000)}, "body"))
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

	// MIME.
	add("mime-unclosed-boundary", msg("mime-unclosed-boundary", []string{"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="b1"`},
		"--b1", "Content-Type: text/plain", "", "part one", "--b1", "Content-Type: text/plain", "", "part two, never closed"))
	add("mime-no-boundary-param", msg("mime-no-boundary-param", []string{"MIME-Version: 1.0", "Content-Type: multipart/mixed"}, "--x", "", "part", "--x--"))
	add("mime-wrong-boundary", msg("mime-wrong-boundary", []string{"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="right"`},
		"--wrong", "", "part", "--wrong--"))
	nested := []string{"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="n0"`}
	var nb []string
	for i := 0; i < 60; i++ {
		nb = append(nb, fmt.Sprintf("--n%d", i), fmt.Sprintf(`Content-Type: multipart/mixed; boundary="n%d"`, i+1), "")
	}
	nb = append(nb, "--n60", "Content-Type: text/plain", "", "deep", "--n60--")
	add("mime-nested-60", msg("mime-nested-60", nested, nb...))
	add("mime-boundary-800", msg("mime-boundary-800", []string{"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="` + strings.Repeat("b", 800) + `"`},
		"--"+strings.Repeat("b", 800), "", "part", "--"+strings.Repeat("b", 800)+"--"))
	add("base64-broken", msg("base64-broken", []string{"MIME-Version: 1.0", "Content-Type: text/plain", "Content-Transfer-Encoding: base64"}, "!!!not*base64$$$", "===="))
	add("qp-broken", msg("qp-broken", []string{"MIME-Version: 1.0", "Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable"}, "=ZZ=\r=", "soft break at end ="))
	add("charset-bogus", msg("charset-bogus", []string{"MIME-Version: 1.0", "Content-Type: text/plain; charset=x-no-such-charset"}, "body"))

	// Dots (POP3 and SMTP dot-stuffing).
	add("lone-dot-line", msg("lone-dot-line", nil, "before", ".", "after the lone dot"))
	add("dot-lines", msg("dot-lines", nil, ".", "..", "...", ". space", ".\t", ".x"))
	add("ends-with-dot-line", msg("ends-with-dot-line", nil, "last line is a dot", "."))
	add("ends-with-dot-no-crlf", []byte(strings.Join(append(hdr("ends-with-dot-no-crlf"), "", "final dot without CRLF", "."), "\r\n")))
	add("smuggle-lf-dot-crlf", msg("smuggle-lf-dot-crlf", nil, "text\n.\r\nMAIL FROM:<evil@attacker.example>", "RCPT TO:<victim@corp.example>", "DATA", "smuggled"))
	add("smuggle-crlf-dot-lf", msg("smuggle-crlf-dot-lf", nil, "text", ".\nMAIL FROM:<evil@attacker.example>"))
	add("smuggle-cr-dot-cr", msg("smuggle-cr-dot-cr", nil, "text\r.\rMAIL FROM:<evil@attacker.example>"))

	// Identity and envelope.
	add("missing-message-id", crlf("From: a@isp.example", "To: sales@isp.example", "Subject: no Message-ID", "", "body"))
	add("duplicate-message-id", msg("duplicate-message-id", []string{"Message-ID: <second@isp.example>"}, "body"))
	add("empty-message-id", crlf("From: a@isp.example", "Message-ID:", "Subject: empty Message-ID", "", "body"))
	add("message-id-no-brackets", crlf("From: a@isp.example", "Message-ID: plain-id@isp.example", "", "body"))
	add("same-message-id-a", crlf("From: a@isp.example", "Message-ID: <shared@isp.example>", "Subject: first of two with one Message-ID", "", "body A"))
	add("same-message-id-b", crlf("From: b@isp.example", "Message-ID: <shared@isp.example>", "Subject: second of two with one Message-ID", "", "body B"))
	add("return-path-null", msg("return-path-null", []string{"Return-Path: <>"}, "a bounce"))
	add("return-path-garbage", msg("return-path-garbage", []string{"Return-Path: <<<not an address>>>"}, "body"))
	add("from-group-syntax", crlf("From: undisclosed-recipients:;", "Subject: group From", "", "body"))
	add("from-multiple", crlf("From: a@isp.example, b@isp.example", "Subject: two authors", "", "body"))
	add("x-test-seq-header", msg("x-test-seq-header", []string{"X-Test-Seq: 1"}, "claims to be generated message 1"))
	return out
}

// GeneratedHostile returns the hostile messages made at test time: 10,000
// header fields, one 1 MiB line, and a message of big bytes.
func GeneratedHostile(big int64) (names []string, msgs [][]byte) {
	var b bytes.Buffer
	b.Write(crlf(hdr("fields-10000")...))
	for i := 0; i < 10_000; i++ {
		fmt.Fprintf(&b, "X-Field-%05d: value %d\r\n", i, i)
	}
	b.WriteString("\r\nbody\r\n")
	names, msgs = append(names, "gen-fields-10000"), append(msgs, b.Bytes())

	line := msg("line-1mib", nil, strings.Repeat("L", 1<<20))
	names, msgs = append(names, "gen-line-1mib"), append(msgs, line)

	names = append(names, fmt.Sprintf("gen-big-%dmib", big>>20))
	msgs = append(msgs, bigBody(big))
	return names, msgs
}

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
