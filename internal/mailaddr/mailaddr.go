// Package mailaddr checks host names and mail addresses: the one set of
// rules that config, route, notify, relay and recipients apply. Its errors
// give the reason only ("label \"a_b\": \"_\" is not allowed ..."); the
// caller names the value and the setting.
//
// Guarantees:
//   - Hostname accepts the DNS's preferred name syntax (RFC 1035 §2.3.1 as
//     relaxed by RFC 1123 §2.1): labels of ASCII letters, digits and
//     hyphens, 1 to 63 octets each, neither starting nor ending with a
//     hyphen; at most 253 octets, plus one optional trailing dot (the
//     root). An IDN must be written as its A-labels ("xn--..."). The last
//     label is not all digits, so "192.0.2.1" or "1.2.3.999" is never
//     taken for a name. Underscores, spaces, controls and non-ASCII bytes
//     are refused.
//   - IP addresses: Hostname accepts none. Host accepts a Hostname or a
//     bare IPv4 or IPv6 address (no brackets, no zone), the forms net.Dial
//     and a certificate name take. AddressLiteral accepts only the
//     bracketed RFC 5321 §4.1.3 forms "[192.0.2.1]" and
//     "[IPv6:2001:db8::1]"; Mailbox accepts them after the "@", never a
//     bare IP.
//   - Domain is the domain of a mail address (RFC 5321 §4.1.2 Domain, with
//     RFC 6531 §3.3's U-labels for SMTPUTF8): a Hostname without the
//     trailing dot whose labels may also be U-labels.
//   - Mailbox accepts Local-part "@" (Domain / address literal) where the
//     local part is a Dot-string: atoms of RFC 5322 §3.2.3 atext, plus
//     non-ASCII UTF-8 (RFC 6531 §3.3), joined by single dots. Limits of RFC
//     5321 §4.5.3.1: local part 64 octets, whole mailbox 254 (a path of
//     256 with its angle brackets). Such an address can be written into a
//     header field or an SMTP command as it is, without quoting.
//   - WireSafe only guarantees that an address written between the angle
//     brackets of MAIL FROM or RCPT TO cannot change the command: no
//     control character, no angle bracket, at most 320 octets.
//
// What it cannot do: it checks syntax, never the DNS. It does not decode
// A-labels nor apply IDNA2008's code-point tables to U-labels (a U-label is
// only checked to be letters, marks, digits and hyphens). Mailbox refuses
// the Quoted-string local part ("john doe"@example.com), which RFC 5321
// §4.1.2 advises against and which net/mail would unquote; an address
// that needs it can still be relayed, since WireSafe allows it.
package mailaddr

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits from RFC 1035 §2.3.4 and RFC 5321 §4.5.3.1.
const (
	maxLabel     = 63
	maxName      = 253 // octets of a name in text form, without the root dot
	maxLocalPart = 64
	maxMailbox   = 254 // a 256-octet path less its angle brackets
	maxWire      = 320 // 64 + "@" + 255: more than any real path
)

// Hostname returns nil if s is a host name: ASCII labels of letters,
// digits and hyphens, with one optional trailing dot. See the package doc.
func Hostname(s string) error {
	return name(s, true, false)
}

// Host returns nil if s is a Hostname or a bare IP address.
func Host(s string) error {
	if isIP(s) {
		return nil
	}
	if err := Hostname(s); err != nil {
		return fmt.Errorf("neither an IP address nor a host name (%w)", err)
	}
	return nil
}

// Domain returns nil if s is the domain of a mail address: a host name
// without the trailing dot whose labels are LDH labels, A-labels or
// U-labels. Address literals are checked by AddressLiteral.
func Domain(s string) error {
	return name(s, false, true)
}

// AddressLiteral returns nil if s is an RFC 5321 §4.1.3 address literal:
// "[192.0.2.1]" or "[IPv6:2001:db8::1]" (the tag in any case). An IPv6
// address without the tag, an IPv4 address after it and the
// General-address-literal are refused.
func AddressLiteral(s string) error {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") || len(s) < 2 {
		return errors.New("an address literal must be enclosed in [ and ]")
	}
	inner := s[1 : len(s)-1]
	if len(inner) >= 5 && strings.EqualFold(inner[:5], "IPv6:") {
		if v6 := inner[5:]; !isIP(v6) || !strings.Contains(v6, ":") {
			return errors.New("not a valid IPv6 address literal")
		}
		return nil
	}
	switch {
	case isIP(inner) && !strings.Contains(inner, ":"):
		return nil
	case isIP(inner):
		return fmt.Errorf("write an IPv6 address literal as [IPv6:%s]", inner)
	}
	return errors.New("not a valid IP address literal")
}

// Mailbox returns nil if s is a mailbox as the package doc describes:
// dot-atom local part, "@", Domain or AddressLiteral.
func Mailbox(s string) error {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return errors.New("no @domain")
	}
	local, domain := s[:at], s[at+1:]
	switch {
	case local == "":
		return errors.New("nothing before the @")
	case len(local) > maxLocalPart:
		return fmt.Errorf("the part before the @ is longer than %d octets", maxLocalPart)
	case strings.HasPrefix(local, `"`):
		return errors.New("a quoted local part is not accepted; use an address that needs no quotes")
	}
	if msg := dotString(local); msg != "" {
		return fmt.Errorf("%s before the @", msg)
	}
	if domain == "" {
		return errors.New("nothing after the @")
	}
	var err error
	if strings.HasPrefix(domain, "[") {
		err = AddressLiteral(domain)
	} else {
		err = Domain(domain)
	}
	if err != nil {
		return fmt.Errorf("invalid domain %q: %w", domain, err)
	}
	if len(s) > maxMailbox {
		return fmt.Errorf("longer than %d octets", maxMailbox)
	}
	return nil
}

// WireSafe returns nil if s can be written between the angle brackets of
// MAIL FROM or RCPT TO without changing the command: not empty, no control
// character (CR, LF, NUL, DEL and the rest of C0), no "<" or ">", at most
// 320 octets. It checks no further syntax; the server judges that.
func WireSafe(s string) error {
	if s == "" {
		return errors.New("empty address")
	}
	if len(s) > maxWire {
		return fmt.Errorf("address longer than %d octets", maxWire)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character %U in address", r)
		}
		if r == '<' || r == '>' {
			return fmt.Errorf("%q in address", r)
		}
	}
	return nil
}

// name checks a dot-separated name; rootDot allows one trailing dot,
// uLabels labels of non-ASCII letters, marks and digits.
func name(s string, rootDot, uLabels bool) error {
	n := s
	if rootDot {
		n = strings.TrimSuffix(s, ".")
	}
	switch {
	case n == "":
		return errors.New("empty")
	case len(n) > maxName:
		return fmt.Errorf("longer than %d octets", maxName)
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if msg := label(l, uLabels); msg != "" {
			return errors.New(msg)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return errors.New("the last label is all digits, as in an IP address, not a name")
	}
	return nil
}

// label returns why l is not a label, or "".
func label(l string, uLabels bool) string {
	switch {
	case l == "":
		return "empty label (two dots in a row, or a dot at the start)"
	case len(l) > maxLabel:
		return fmt.Sprintf("label %.20q... is longer than %d octets", l, maxLabel)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Sprintf("label %q starts or ends with a hyphen", l)
	}
	for i, r := range l {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-':
		case r < utf8.RuneSelf || !uLabels:
			return fmt.Sprintf("label %q: %q is not allowed (letters, digits and hyphens only)", l, l[i:i+1])
		case r == utf8.RuneError && !strings.HasPrefix(l[i:], "\uFFFD"):
			return fmt.Sprintf("label %q: invalid UTF-8", l)
		case !unicode.IsLetter(r) && !unicode.IsMark(r) && !unicode.IsDigit(r):
			return fmt.Sprintf("label %q: %q is not allowed", l, r)
		}
	}
	return ""
}

// dotString returns why s is not a Dot-string (RFC 5321 §4.1.2) of
// RFC 5322 atext and non-ASCII UTF-8, or "".
func dotString(s string) string {
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return "a dot at the start or end, or two in a row,"
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.':
		case r < utf8.RuneSelf:
			if !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r) {
				return fmt.Sprintf("%q is not allowed", s[i:i+1])
			}
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return "invalid UTF-8"
		case r < 0xa0 || unicode.IsSpace(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029':
			return fmt.Sprintf("%U is not allowed", r)
		}
	}
	return ""
}

// isIP reports a bare IPv4 or IPv6 address (net.ParseIP takes no zone).
func isIP(s string) bool {
	return net.ParseIP(s) != nil
}
