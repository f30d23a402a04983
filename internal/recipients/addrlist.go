package recipients

import (
	"fmt"
	"io"
	"mime"
	netmail "net/mail"
	"strings"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// lenientParser parses like go-message's mail.ParseAddressList but does not
// fail on an encoded-word in a charset it cannot decode: such a display name
// is kept undecoded. Only addresses matter here, never display names.
var lenientParser = netmail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		if gomessage.CharsetReader != nil {
			if r, err := gomessage.CharsetReader(charset, input); err == nil {
				return r, nil
			}
		}
		return input, nil
	},
}}

// parseList returns the addr-specs of an address-list field value (RFC 5322
// §3.4), groups included. A value that does not parse as a whole is split
// into its top-level entries, each parsed on its own; problems describe the
// entries skipped or only partly understood.
func parseList(v string) (addrs []string, problems []string) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	list, err := mail.ParseAddressList(v)
	if err != nil {
		list, err = lenientParser.ParseList(v)
	}
	if err == nil {
		for _, a := range list {
			addrs = append(addrs, a.Address)
		}
		return addrs, nil
	}
	for _, entry := range splitList(v) {
		a, problem := parseEntry(entry)
		if a != "" {
			addrs = append(addrs, a)
		}
		if problem != "" {
			problems = append(problems, problem)
		}
	}
	return addrs, problems
}

// parseEntry parses one entry of an address list. An entry whose display
// name cannot be read (raw 8-bit bytes, say) but which ends in a valid
// <angle-addr> keeps that address, with a note.
func parseEntry(entry string) (addr, problem string) {
	if a, err := mail.ParseAddress(entry); err == nil {
		return a.Address, ""
	}
	a, err := lenientParser.Parse(entry)
	if err == nil {
		return a.Address, ""
	}
	if lt, gt := strings.LastIndexByte(entry, '<'), strings.LastIndexByte(entry, '>'); lt >= 0 && gt > lt && strings.TrimSpace(entry[gt+1:]) == "" {
		if a, aerr := mail.ParseAddress(entry[lt : gt+1]); aerr == nil {
			return a.Address, fmt.Sprintf("kept %s from %q: display name unreadable (%v)", a.Address, clip(entry), err)
		}
	}
	return "", fmt.Sprintf("skipped %q: %v", clip(entry), err)
}

// splitList cuts an address-list value at its top-level commas, outside
// quoted strings, comments, angle brackets and domain literals. A group's
// display name ("Friends:") is dropped and its closing ";" ends an entry, so
// the members come out as ordinary entries. It is only used to isolate a
// malformed entry; every entry is then parsed by the RFC 5322 parser. When
// the value ends inside an unbalanced quote, comment or bracket, the careful
// split would swallow the rest of the list, so a plain comma split is used.
func splitList(v string) []string {
	var (
		entries []string
		cur     strings.Builder
		comment int
		quoted  bool
		angle   bool
		literal bool
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			entries = append(entries, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted || comment > 0:
			cur.WriteByte(c)
			switch {
			case c == '\\' && i+1 < len(v):
				i++
				cur.WriteByte(v[i])
			case quoted && c == '"':
				quoted = false
			case !quoted && c == '(':
				comment++
			case !quoted && c == ')':
				comment--
			}
		case literal:
			cur.WriteByte(c)
			if c == ']' {
				literal = false
			}
		default:
			switch c {
			case '"':
				quoted = true
			case '(':
				comment = 1
			case '[':
				literal = true
			case '<':
				angle = true
			case '>':
				angle = false
			}
			switch {
			case (c == ',' || c == ';') && !angle:
				flush()
			case c == ':' && !angle:
				cur.Reset() // a group's display name
			default:
				cur.WriteByte(c)
			}
		}
	}
	if quoted || comment > 0 || angle || literal {
		entries = entries[:0]
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				entries = append(entries, s)
			}
		}
		return entries
	}
	flush()
	return entries
}
