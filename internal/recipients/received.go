package recipients

import "strings"

// receivedFor returns the path of the "for" clause of a Received field value
// (RFC 5321 §4.4: Stamp = From-domain By-domain Opt-info [CFWS] ";"
// date-time, with Opt-info's For = CFWS "FOR" FWS ( Path / Mailbox )), e.g.
// "<user@corp.example>" or "user@corp.example". It is "" and false when the
// field has none.
//
// The scan skips comments (nested, with quoted-pairs), quoted strings and
// domain literals, and stops at the top-level ";" that starts the date, so
// "for" inside "(... for relay ...)" or after the date is never taken. A
// Received field is not an address list, so this is not address-list
// parsing: the clause found is parsed by the RFC 5322 parser afterwards.
func receivedFor(v string) (string, bool) {
	i := 0
	prevSep := true // at a word boundary
	for i < len(v) {
		c := v[i]
		switch {
		case c == '(':
			i = skipComment(v, i)
			prevSep = true
		case c == '"':
			i = skipQuoted(v, i)
			prevSep = false
		case c == '[':
			if j := strings.IndexByte(v[i:], ']'); j >= 0 {
				i += j + 1
			} else {
				i = len(v)
			}
			prevSep = false
		case c == ';':
			return "", false
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
			prevSep = true
		default:
			if prevSep && (c == 'f' || c == 'F') && len(v)-i >= 3 && strings.EqualFold(v[i:i+3], "for") {
				if j := i + 3; j == len(v) || isFWS(v[j]) || v[j] == '<' || v[j] == '(' {
					if path, ok := forPath(v, j); ok {
						return path, true
					}
				}
			}
			i++
			prevSep = false
		}
	}
	return "", false
}

// forPath reads the Path or Mailbox after "for" starting at i, skipping
// CFWS first.
func forPath(v string, i int) (string, bool) {
	for i < len(v) && (isFWS(v[i]) || v[i] == '(') {
		if v[i] == '(' {
			i = skipComment(v, i)
		} else {
			i++
		}
	}
	if i >= len(v) {
		return "", false
	}
	if v[i] == '<' {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return "", false
		}
		return v[i : i+j+1], true
	}
	j := i
	for j < len(v) && !isFWS(v[j]) && v[j] != ';' && v[j] != '(' && v[j] != ',' {
		if v[j] == '"' {
			j = skipQuoted(v, j)
			continue
		}
		j++
	}
	if j == i {
		return "", false
	}
	return v[i:j], true
}

// skipComment returns the index just past the comment opening at v[i].
func skipComment(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(v)
}

// skipQuoted returns the index just past the quoted string opening at v[i].
func skipQuoted(v string, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(v)
}

func isFWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
