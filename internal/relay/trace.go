package relay

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// TraceInfo describes one hop for a Received: trace field.
type TraceInfo struct {
	// From names where the message came from, e.g. the POP3 server's host.
	// If it holds more than one word, the first is the name and the rest a
	// comment ("pop.isp.example (POP3 mailbox sales)"), unless FromComment
	// is set.
	From        string
	FromComment string
	// By names this host (default: the host name); ByComment defaults to
	// "popconnector".
	By        string
	ByComment string
	// With is the protocol the message arrived by, e.g. "POP3".
	With string
	// ID identifies the message at this hop; it is shown as "id <ID>".
	ID string
	// For is the recipient. RFC 5321 §4.4 allows exactly one: with more than
	// one the clause is left out, so that Bcc recipients are not disclosed.
	For []string
	// At is the time of receipt; zero means now.
	At time.Time
}

// Limits on each value keep every line of the field far below the 998
// octets of RFC 5322 §2.1.1.
const (
	maxTraceName    = 100
	maxTraceComment = 100
	maxTraceAddr    = 256
)

// TraceHeader returns one Received: field (RFC 5321 §4.4, syntax of RFC 5322
// §3.6.7), folded before the FOR clause (or the date when there is none),
// CRLF-terminated:
//
//	Received: from pop.isp.example (POP3 mailbox sales) by relay-host (popconnector) with POP3 id <id>
//		for <a@b>; Mon, 2 Jan 2006 15:04:05 -0700
//
// Every value is sanitised: CR, LF and other control characters are removed,
// so no value can end the field or start another; names and addresses lose
// whitespace and the characters that delimit clauses; comments have their
// parentheses escaped; each value is capped in length. Empty values drop
// their clause.
func TraceHeader(t TraceInfo) string {
	var b strings.Builder
	b.Grow(200)
	b.WriteString("Received:")

	fromName, fromComment := clean(t.From), t.FromComment
	if fromComment == "" {
		if name, rest, ok := strings.Cut(fromName, " "); ok {
			fromName = name
			rest = strings.TrimSpace(rest)
			if len(rest) >= 2 && rest[0] == '(' && rest[len(rest)-1] == ')' {
				rest = rest[1 : len(rest)-1]
			}
			fromComment = rest
		}
	}
	clause(&b, "from", traceName(fromName), traceComment(fromComment))

	byComment := t.ByComment
	if byComment == "" {
		byComment = "popconnector"
	}
	by := traceName(t.By)
	if by == "" {
		by = traceName(localName()) // RFC 5321 §4.4: "by" is not optional
	}
	clause(&b, "by", by, traceComment(byComment))

	if with := traceAtom(t.With); with != "" {
		b.WriteString(" with ")
		b.WriteString(with)
	}
	if id := traceID(t.ID); id != "" {
		b.WriteString(" id <")
		b.WriteString(id)
		b.WriteByte('>')
	}

	at := t.At
	if at.IsZero() {
		at = time.Now()
	}
	date := at.Format("Mon, 2 Jan 2006 15:04:05 -0700")

	var rcpt string
	if len(t.For) == 1 {
		rcpt = traceAddr(t.For[0])
	}
	if rcpt != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(rcpt)
		b.WriteString(">; ")
	} else {
		b.WriteString(";\r\n\t")
	}
	b.WriteString(date)
	b.WriteString("\r\n")
	return b.String()
}

// clause writes " KEYWORD name (comment)", omitting what is empty.
func clause(b *strings.Builder, keyword, name, comment string) {
	if name == "" {
		return
	}
	b.WriteByte(' ')
	b.WriteString(keyword)
	b.WriteByte(' ')
	b.WriteString(name)
	if comment != "" {
		b.WriteString(" (")
		b.WriteString(comment)
		b.WriteByte(')')
	}
}

// clean makes s valid UTF-8, drops control characters (C0, DEL, C1, and the
// Unicode line and paragraph separators) and collapses runs of white space.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "?")
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == ' ' || r == '\t' || r == '\r' || r == '\n' || unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case unicode.IsControl(r), r == '\u2028', r == '\u2029', unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// traceName keeps a host name or address literal: no white space and none of
// the characters that delimit comments, addresses or the date.
func traceName(s string) string {
	s = strings.Map(func(r rune) rune {
		if strings.ContainsRune(" ()<>;,@\\\"", r) {
			return -1
		}
		return r
	}, clean(s))
	return truncate(s, maxTraceName)
}

// traceComment escapes what would end or nest the comment (RFC 5322 §3.2.2
// quoted-pair).
func traceComment(s string) string {
	s = truncate(clean(s), maxTraceComment)
	if !strings.ContainsAny(s, "()\\") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '(' || r == ')' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// traceAtom keeps letters, digits and "-" (a protocol name, RFC 5321 §4.4).
func traceAtom(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-') {
			return r
		}
		return -1
	}, s)
	return truncate(s, 32)
}

// traceID keeps the characters of a msg-id (RFC 5322 §3.6.4: atext, "."
// and "@"), without the angle brackets TraceHeader adds.
func traceID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	s = strings.Map(func(r rune) rune {
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.@", r)) {
			return r
		}
		return -1
	}, s)
	return truncate(s, maxTraceName)
}

// traceAddr keeps a mailbox without white space or the characters that
// would end the path or the clause.
func traceAddr(s string) string {
	s = strings.Map(func(r rune) rune {
		if strings.ContainsRune(" <>();,\\", r) {
			return -1
		}
		return r
	}, clean(s))
	return truncate(s, maxTraceAddr)
}
