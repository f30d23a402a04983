// Package notify writes the notices the connector sends to the postmaster:
// delivery status notifications (RFC 3464) when Exchange rejects a message
// as spam, for an unknown recipient or as too large, or when a message is
// set aside (badmail), and the plain test message of `popconn test-notify` (the
// POPcon manual's "Test settings (email to postmaster)"). It also classifies
// Exchange's replies (Classify), decides when the undeliverable option
// "delete" may act (Deletable) and tells a notice refused for good from
// one to send again (NoticeRefusedPermanently).
//
// A notice is a multipart/report; report-type=delivery-status message
// (RFC 6522) of three parts: a text/plain explanation for people, a
// message/delivery-status part with the per-message fields (RFC 3464 §2.2)
// and one group of per-recipient fields per recipient (§2.3), and a
// text/rfc822-headers part with the original message's header.
//
// Guarantees:
//   - No value taken from the original message or from a server reply can
//     add a header field to the notice or break its MIME structure: text is
//     stripped of CR, LF and other controls and encoded with RFC 2047 where
//     it is not ASCII, addresses and codes are validated, header fields are
//     written by emersion/go-message (which refuses CR or LF in a value),
//     and the original header travels only inside the text/rfc822-headers
//     body, quoted-printable (base64 if it has bare CRs) when it is not
//     plain 7-bit.
//   - No text of the original message appears outside the
//     text/rfc822-headers part: the notice's Subject and explanation name
//     the message by what the connector made (its archive key, the mailbox
//     id), and the notice has no In-Reply-To or References. A filter that
//     refused the original for its Subject, sender or Message-ID ("[SPAM]
//     …") therefore does not refuse the notice about it.
//   - The output is 7-bit clean and its lines are at most 998 bytes (RFC
//     5322 §2.1.1), so it needs neither 8BITMIME nor SMTPUTF8.
//   - The Message-ID is a function of the original message's Message-ID
//     (or, without one, of its header), the cause and whether delivery
//     failed or is only delayed: a resent notice is recognisable.
//   - Invalid input that only the caller controls (addresses, status codes,
//     the reporting MTA name) is an error; nothing is written then.
//
// What it cannot do: it does not send anything (relay the notice with the
// null reverse-path "<>", RFC 3464 §2 / RFC 5321 §4.5.5, so that a failing
// notice cannot loop), and it does not decide whether the postmaster wants
// a notice: that is the configuration's notify switches. It cannot keep a
// filter from matching the attached original header itself, or the
// server's reply quoted in Diagnostic-Code.
package notify

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/popconnector/popconnector/internal/mailaddr"
	"github.com/popconnector/popconnector/internal/relay"
)

// ErrInvalid is matched (errors.Is) by every error about a Notice's own
// values.
var ErrInvalid = errors.New("notify: invalid notice")

// MaxOriginalHeader bounds the original header copied into a notice; a
// longer one is cut at a line boundary and the explanation says so.
const MaxOriginalHeader = 256 << 10

// Action is the per-recipient Action field (RFC 3464 §2.3.3).
type Action string

const (
	// ActionFailed: the message could not be delivered to the recipient.
	ActionFailed Action = "failed"
	// ActionDelayed: delivery failed for now and will be retried.
	ActionDelayed Action = "delayed"
)

// RecipientStatus is one recipient's outcome: a per-recipient group of
// the message/delivery-status part.
type RecipientStatus struct {
	// Final is the address the connector relayed to (Final-Recipient,
	// §2.3.2). Required.
	Final string
	// Original is the address before rewriting, when it differs
	// (Original-Recipient, §2.3.1); optional.
	Original string
	// Action is failed or delayed.
	Action Action
	// Status is the RFC 3463 status code, e.g. "5.7.1" (§2.3.4); class 4
	// or 5 for failed, 4 for delayed.
	Status string
	// DiagnosticCode is the server's reply, "smtp; 550 5.7.1 text"
	// (§2.3.6); a reply without a "type;" prefix gets "smtp; ". Optional;
	// untrusted text: it is cleaned.
	DiagnosticCode string
	// RemoteMTA is the Exchange server that answered (§2.3.5): a host
	// name, IP address or address literal. Optional.
	RemoteMTA string
	// LastAttempt is when the connector last tried (§2.3.7). Optional.
	LastAttempt time.Time
	// WillRetryUntil is when a delayed message will stop being retried
	// (§2.3.8). Optional, only with ActionDelayed.
	WillRetryUntil time.Time
}

// Notice is what BuildDSN needs.
type Notice struct {
	// From is the notice's author, the postmaster: a bare address.
	From string
	// To is the postmaster who receives it: a bare address.
	To string
	// ReportingMTA is this connector's host name (§2.2.2). Required.
	ReportingMTA string
	// ReceivedFromMTA is the POP3 server the message came from (§2.2.4);
	// optional.
	ReceivedFromMTA string
	// OriginalHeader is the original message's header section as read
	// (anything after the first blank line is ignored). Takes precedence
	// over Original.
	OriginalHeader []byte
	// Original is the original message's parsed header, used when
	// OriginalHeader is nil (the message.Inspector's Summary.Header).
	Original *mail.Header
	// OriginalEnvelopeID is the ENVID the message arrived with (§2.2.1);
	// optional.
	OriginalEnvelopeID string
	// Recipients are the recipients reported on; at least one.
	Recipients []RecipientStatus
	// Cause selects the wording: spam, unknown-recipient, relay-denied,
	// too-large, badmail or other.
	Cause Cause
	// Reason is a sentence for the postmaster on what happened; optional.
	// It must not quote the original message (its Subject, say): a filter
	// that refused the message could refuse the notice for it.
	Reason string
	// Disposition says what became of the message: "left on the POP3
	// server; retried every 10m", "deleted from the POP3 server", "moved to
	// badmail". Optional.
	Disposition string
	// Mailbox and ArchiveKey tell the postmaster where the message is.
	// Optional. The Subject names the message by both, when they are
	// plain tokens (a mailbox id; an archive key whose last element is
	// letters, digits, ".", "_" and "-"), and leaves them out otherwise.
	Mailbox    string
	ArchiveKey string
	// Size is the message's size in bytes, and SizeLimit the largest the
	// server accepts (the SIZE it advertised, RFC 1870); 0 when unknown.
	// Optional; shown with CauseTooLarge.
	Size, SizeLimit int64
	// ArrivalDate is when the connector fetched the message (§2.2.5);
	// optional.
	ArrivalDate time.Time
	// Now is the notice's Date. Required.
	Now time.Time
	// MessageID, without angle brackets, overrides the derived one.
	MessageID string
}

// RecipientFromError describes a recipient that got e from remoteMTA at
// the time at: failed for a permanent error, delayed for a temporary one,
// the enhanced status code when the server gave one (else X.0.0 from the
// reply code, or 4.4.1 / 5.0.0 for failures without a reply), and the
// reply as diagnostic code.
func RecipientFromError(rcpt string, e *relay.Error, remoteMTA string, at time.Time) RecipientStatus {
	rs := RecipientStatus{Final: rcpt, RemoteMTA: remoteMTA, LastAttempt: at, Action: ActionFailed}
	if e == nil {
		rs.Status = "5.0.0"
		return rs
	}
	class := "5"
	if e.Temporary {
		rs.Action, class = ActionDelayed, "4"
	}
	switch {
	case e.Enhanced != "" && strings.HasPrefix(e.Enhanced, class+"."):
		rs.Status = e.Enhanced
	case e.Code == 0 && e.Temporary:
		rs.Status = "4.4.1" // no answer from host
	default:
		rs.Status = class + ".0.0"
	}
	if e.Code != 0 {
		reply := strconv.Itoa(e.Code)
		if e.Enhanced != "" {
			reply += " " + e.Enhanced
		}
		if e.Message != "" {
			reply += " " + e.Message
		}
		rs.DiagnosticCode = "smtp; " + reply
	}
	return rs
}

// checkAddressing validates what every message this package writes needs:
// its From and To as bare addresses and the reporting MTA's host name.
func checkAddressing(fromAddr, toAddr, reportingMTA string) (from, to string, err error) {
	if from, err = bareAddress("From", fromAddr); err != nil {
		return "", "", err
	}
	if to, err = bareAddress("To", toAddr); err != nil {
		return "", "", err
	}
	if err := mailaddr.Hostname(reportingMTA); err != nil {
		return "", "", fmt.Errorf("%w: reporting MTA %q is not a host name: %v", ErrInvalid, reportingMTA, err)
	}
	return from, to, nil
}

// BuildDSN writes n as an RFC 3464 delivery status notification to w.
func BuildDSN(w io.Writer, n Notice) error {
	from, to, err := checkAddressing(n.From, n.To, n.ReportingMTA)
	if err != nil {
		return err
	}
	if n.ReceivedFromMTA != "" && !validMTAName(n.ReceivedFromMTA) {
		return fmt.Errorf("%w: received-from MTA %q is not a host name or address", ErrInvalid, n.ReceivedFromMTA)
	}
	if n.Now.IsZero() {
		return fmt.Errorf("%w: Now is not set", ErrInvalid)
	}
	label, ok := causeLabel[n.Cause]
	if !ok {
		return fmt.Errorf("%w: cause %q is not spam, unknown-recipient, relay-denied, too-large, badmail, held or other", ErrInvalid, n.Cause)
	}
	if n.Size < 0 || n.SizeLimit < 0 {
		return fmt.Errorf("%w: size %d or size limit %d is negative", ErrInvalid, n.Size, n.SizeLimit)
	}
	if len(n.Recipients) == 0 {
		return fmt.Errorf("%w: no recipient", ErrInvalid)
	}
	failed := false
	groups := make([][]field, len(n.Recipients))
	for i, rs := range n.Recipients {
		g, err := recipientFields(rs)
		if err != nil {
			return fmt.Errorf("%w: recipient %d: %w", ErrInvalid, i+1, err)
		}
		groups[i] = g
		failed = failed || rs.Action == ActionFailed
	}
	orig := readOriginal(n)
	id := n.MessageID
	if id == "" {
		id = NoticeID(orig.messageID, orig.header, n.Cause, failed, domainOf(from))
	} else if !validMsgID(id) {
		return fmt.Errorf("%w: Message-ID %q is not id-left@id-right", ErrInvalid, id)
	}

	var h mail.Header
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	h.Set("MIME-Version", "1.0")
	// RFC 3834 §5: generated by software in response to a message.
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("X-Popconn-Notice", string(n.Cause))
	// No In-Reply-To or References: the original Message-ID is text the
	// sender chose, and a header filter may match it (or its domain).
	h.SetMessageID(id)
	if !failed {
		label = "Delivery delayed"
	}
	h.SetSubject(subject(label, n))
	h.SetDate(n.Now)
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetAddressList("From", []*mail.Address{{Name: "popconnector", Address: from}})

	mw, err := gomessage.CreateWriter(w, h.Header)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}

	var th gomessage.Header
	th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	th.Set("Content-Transfer-Encoding", "quoted-printable")
	if err := writePart(mw, th, explanation(n, orig, failed)); err != nil {
		return err
	}

	var dh gomessage.Header
	dh.SetContentType("message/delivery-status", nil)
	dh.Set("Content-Transfer-Encoding", "7bit")
	status, err := deliveryStatus(n, groups)
	if err != nil {
		return err
	}
	if err := writePart(mw, dh, status); err != nil {
		return err
	}

	var oh gomessage.Header
	oh.SetContentType("text/rfc822-headers", nil)
	oh.Set("Content-Transfer-Encoding", orig.encoding)
	if err := writePart(mw, oh, orig.header); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// causeLabel is the subject prefix for each cause a DSN may report.
var causeLabel = map[Cause]string{
	CauseSpam:             "Rejected as spam",
	CauseUnknownRecipient: "Unknown recipient",
	CauseRelayDenied:      "Relay denied",
	CauseTooLarge:         "Too large for Exchange",
	CauseBadmail:          "Moved to badmail",
	CauseHeld:             "Held on the POP3 server",
	CauseOther:            "Undeliverable",
}

// subject is the notice's Subject: the label and the message's archive
// name and mailbox, "Rejected as spam: message 3f9c…e1 from mailbox
// sales". The original Subject is not repeated: a Subject filter that
// refused the original ("[SPAM] …") refused the notice that quoted it,
// and the notice was retried every interval and never read. What is left
// is fixed text and names the connector made, which a postmaster can look
// up (popconn's archive, the mailbox's log).
func subject(label string, n Notice) string {
	var ref string
	if k := strings.TrimSuffix(path.Base(n.ArchiveKey), ".eml"); n.ArchiveKey != "" && isToken(k) {
		ref = "message " + k
	}
	if isToken(n.Mailbox) {
		if ref == "" {
			ref = "a message"
		}
		ref += " from mailbox " + n.Mailbox
	}
	if ref == "" {
		return label
	}
	return label + ": " + ref
}

// isToken accepts a name made by the connector or its configuration: 1 to
// 64 ASCII letters, digits, ".", "_" and "-", starting with a letter or
// digit.
func isToken(s string) bool {
	return isAtom(s) && len(s) <= 64 && s[0] != '.' && s[0] != '_' && s[0] != '-'
}

// causeText opens the explanation.
var causeText = map[Cause]string{
	CauseSpam:             "Exchange rejected a message as spam (or another content or sender filter refused it).",
	CauseUnknownRecipient: "Exchange rejected a message because it does not know a recipient address.",
	CauseRelayDenied: "Exchange refused to accept a message from the connector: it may not relay to the recipient's domain, " +
		"or may not submit mail at all. Check the receive connector's permissions and that the recipient's domain is an " +
		"accepted domain (recipient policy). Every message to that domain will fail until this is fixed.",
	CauseTooLarge: "Exchange refused a message as larger than it accepts, or the connector did not send it because it is " +
		"larger than the limit Exchange announces (SIZE). No retry will deliver it until the limit is raised (the receive " +
		"connector's and the organization's maximum message size) or the archived copy is delivered some other way.",
	CauseBadmail: "The connector gave up on a message and set it aside (badmail).",
	CauseHeld: "The POP3 server keeps sending a message with another size than it lists, the same bytes at every fetch, " +
		"so the connector neither relays it (Exchange would get an altered message) nor deletes it (the server's copy may be " +
		"the only good one). It stays on the POP3 server and is fetched again now and then; the archive keeps what was served.",
	CauseOther: "Exchange did not accept a message.",
}

func writePart(mw *gomessage.Writer, h gomessage.Header, body []byte) error {
	pw, err := mw.CreatePart(h)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := pw.Write(body); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// field is one header-style field of the delivery-status body.
type field struct{ k, v string }

// writeGroup writes fields in order as one group ending in a blank line.
// go-message formats and folds each field; the name is then put back in
// RFC 3464's spelling ("Reporting-MTA", which go-message would write
// "Reporting-Mta"; field names are case-insensitive either way).
// textproto.Header.Add prepends, hence the reverse order.
func writeGroup(buf *bytes.Buffer, fields []field) error {
	var h textproto.Header
	for i := len(fields) - 1; i >= 0; i-- {
		var one textproto.Header
		one.Add(fields[i].k, fields[i].v)
		raw, err := one.Raw(fields[i].k)
		if err != nil {
			return fmt.Errorf("notify: delivery-status: %w", err)
		}
		h.AddRaw(append([]byte(fields[i].k), raw[len(fields[i].k):]...))
	}
	if err := textproto.WriteHeader(buf, h); err != nil {
		return fmt.Errorf("notify: delivery-status: %w", err)
	}
	return nil
}

func deliveryStatus(n Notice, groups [][]field) ([]byte, error) {
	var per []field
	if n.OriginalEnvelopeID != "" {
		per = append(per, field{"Original-Envelope-Id", xtext(n.OriginalEnvelopeID)})
	}
	per = append(per, field{"Reporting-MTA", "dns; " + n.ReportingMTA})
	if n.ReceivedFromMTA != "" {
		per = append(per, field{"Received-From-MTA", "dns; " + n.ReceivedFromMTA})
	}
	if !n.ArrivalDate.IsZero() {
		per = append(per, field{"Arrival-Date", formatDate(n.ArrivalDate)})
	}
	var buf bytes.Buffer
	if err := writeGroup(&buf, per); err != nil {
		return nil, err
	}
	for _, g := range groups {
		if err := writeGroup(&buf, g); err != nil {
			return nil, err
		}
	}
	// The blank line after the last group would read as an empty group.
	return bytes.TrimSuffix(buf.Bytes(), []byte("\r\n")), nil
}

func recipientFields(rs RecipientStatus) ([]field, error) {
	var fs []field
	if rs.Original != "" {
		v, err := addressValue(rs.Original)
		if err != nil {
			return nil, fmt.Errorf("original recipient: %w", err)
		}
		fs = append(fs, field{"Original-Recipient", v})
	}
	v, err := addressValue(rs.Final)
	if err != nil {
		return nil, fmt.Errorf("final recipient: %w", err)
	}
	fs = append(fs, field{"Final-Recipient", v})
	switch rs.Action {
	case ActionFailed:
		if !validStatus(rs.Status) || rs.Status[0] == '2' {
			return nil, fmt.Errorf("status %q: a failed recipient needs a 4.x.x or 5.x.x status (RFC 3463)", rs.Status)
		}
	case ActionDelayed:
		if !validStatus(rs.Status) || rs.Status[0] != '4' {
			return nil, fmt.Errorf("status %q: a delayed recipient needs a 4.x.x status (RFC 3463)", rs.Status)
		}
	default:
		return nil, fmt.Errorf("action %q is not failed or delayed", rs.Action)
	}
	fs = append(fs, field{"Action", string(rs.Action)}, field{"Status", rs.Status})
	if rs.RemoteMTA != "" {
		if !validMTAName(rs.RemoteMTA) {
			return nil, fmt.Errorf("remote MTA %q is not a host name or address", rs.RemoteMTA)
		}
		fs = append(fs, field{"Remote-MTA", "dns; " + rs.RemoteMTA})
	}
	if d := diagnostic(rs.DiagnosticCode); d != "" {
		fs = append(fs, field{"Diagnostic-Code", d})
	}
	if !rs.LastAttempt.IsZero() {
		fs = append(fs, field{"Last-Attempt-Date", formatDate(rs.LastAttempt)})
	}
	if !rs.WillRetryUntil.IsZero() {
		if rs.Action != ActionDelayed {
			return nil, errors.New("will-retry-until is only for delayed recipients")
		}
		fs = append(fs, field{"Will-Retry-Until", formatDate(rs.WillRetryUntil)})
	}
	return fs, nil
}

// diagnostic formats a Diagnostic-Code value: "type; text", the type an
// atom ("smtp" when absent), the text cleaned to printable ASCII.
func diagnostic(s string) string {
	s = asciiText(s, 900)
	if s == "" {
		return ""
	}
	typ, text, ok := strings.Cut(s, ";")
	if !ok || !isAtom(strings.TrimSpace(typ)) {
		return "smtp; " + s
	}
	return strings.ToLower(strings.TrimSpace(typ)) + "; " + strings.TrimSpace(text)
}

// original is what a notice uses of the original message. Nothing of it
// but the header part itself and the hash in the notice's Message-ID leaves
// the text/rfc822-headers part.
type original struct {
	header    []byte // CRLF lines, no blank line; what goes in text/rfc822-headers
	encoding  string // 7bit, quoted-printable or base64
	truncated bool
	messageID string // only when valid; for NoticeID
}

func readOriginal(n Notice) original {
	var o original
	raw := n.OriginalHeader
	if raw == nil && n.Original != nil {
		raw = serialise(n.Original)
	}
	o.header, o.truncated = normaliseHeader(raw)
	switch {
	case sevenBitLines(o.header):
		o.encoding = "7bit"
	case bytes.IndexByte(bytes.ReplaceAll(o.header, []byte("\r\n"), nil), '\r') >= 0:
		// mime/quotedprintable turns a bare CR into a line break; base64
		// keeps the bytes as they came.
		o.encoding = "base64"
	default:
		o.encoding = "quoted-printable"
	}
	parsed := n.Original
	if n.OriginalHeader != nil || parsed == nil {
		th, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(o.header), strings.NewReader("\r\n"))))
		if err == nil || th.Len() > 0 {
			parsed = &mail.Header{Header: gomessage.Header{Header: th}}
		}
	}
	if parsed == nil {
		return o
	}
	if id, err := parsed.MessageID(); err == nil && validMsgID(id) {
		o.messageID = id
	}
	return o
}

// serialise writes a parsed header back: the raw bytes of fields that were
// read, a formatted line for fields set by a program.
func serialise(h *mail.Header) []byte {
	var buf bytes.Buffer
	fs := h.Fields()
	for fs.Next() {
		if raw, err := fs.Raw(); err == nil {
			buf.Write(raw)
			continue
		}
		buf.WriteString(fs.Key())
		buf.WriteString(": ")
		buf.WriteString(cleanText(fs.Value(), 998))
		buf.WriteString("\r\n")
	}
	return buf.Bytes()
}

// normaliseHeader keeps the header section of raw (up to the first blank
// line, at most MaxOriginalHeader bytes, cut at a line end) with every line
// ending in CRLF.
func normaliseHeader(raw []byte) ([]byte, bool) {
	var out bytes.Buffer
	truncated := false
	for len(raw) > 0 {
		line := raw
		rest := []byte(nil)
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, rest = raw[:i], raw[i+1:]
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of the header section
		}
		if out.Len()+len(line)+2 > MaxOriginalHeader {
			truncated = true
			break
		}
		out.Write(line)
		out.WriteString("\r\n")
		raw = rest
	}
	return out.Bytes(), truncated
}

// sevenBitLines reports whether b can be sent as 7bit: printable ASCII,
// tab, and CRLF line ends only, lines of at most 998 bytes.
func sevenBitLines(b []byte) bool {
	lineLen := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			i++
			lineLen = 0
			continue
		case c == '\t' || (c >= ' ' && c <= '~'):
		default:
			return false
		}
		lineLen++
		if lineLen > 998 {
			return false
		}
	}
	return true
}

// explanation is the human-readable part.
func explanation(n Notice, o original, failed bool) []byte {
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\r\n") }
	item := func(k, v string) {
		if v = cleanText(v, 300); v != "" {
			line("  " + k + ": " + v)
		}
	}
	line("This is popconnector on " + n.ReportingMTA + ".")
	line("")
	line(causeText[n.Cause])
	if !failed {
		line("Delivery is being retried; no action is needed unless this keeps happening.")
	}
	if r := cleanText(n.Reason, 2000); r != "" {
		line("")
		line(r)
	}
	if n.Cause == CauseTooLarge {
		switch {
		case n.Size > 0 && n.SizeLimit > 0:
			line("")
			line("The message is " + formatSize(n.Size) + "; the server accepts at most " + formatSize(n.SizeLimit) + ".")
		case n.Size > 0:
			line("")
			line("The message is " + formatSize(n.Size) + "; the server's limit is not known.")
		case n.SizeLimit > 0:
			line("")
			line("The server accepts at most " + formatSize(n.SizeLimit) + ".")
		}
	}
	line("")
	// The original's From, Subject and Date are not quoted here: a body
	// filter may match them as a Subject filter matched the Subject. The
	// attached header holds them.
	line("The message:")
	item("POP3 mailbox", n.Mailbox)
	item("Archived copy", n.ArchiveKey)
	if n.Size > 0 {
		item("Size", formatSize(n.Size))
	}
	if !n.ArrivalDate.IsZero() {
		item("Fetched", formatDate(n.ArrivalDate))
	}
	line("")
	line("Recipients:")
	for _, rs := range n.Recipients {
		what := string(rs.Action) + ", " + rs.Status
		if d := cleanText(rs.DiagnosticCode, 900); d != "" {
			what += ": " + d
		}
		item(rs.Final, what)
	}
	if d := cleanText(n.Disposition, 500); d != "" {
		line("")
		line("What became of the message: " + d + ".")
	}
	if o.truncated {
		line("")
		line("The original header was longer than " + strconv.Itoa(MaxOriginalHeader>>10) + " KiB; only its beginning is attached.")
	}
	line("")
	line("The delivery status and the original header are attached.")
	return []byte(b.String())
}

// NoticeID derives a notice's Message-ID (without brackets) from the
// original Message-ID (or, when it has none, its header), the cause and
// whether delivery failed, so that the same notice sent again has the same
// ID: "popconn.notice.<cause>.<hash>@<domain>".
func NoticeID(originalID string, originalHeader []byte, cause Cause, failed bool, domain string) string {
	h := sha256.New()
	if originalID != "" {
		h.Write([]byte("id\x00" + originalID))
	} else {
		h.Write([]byte("header\x00"))
		h.Write(originalHeader)
	}
	kind := "delayed"
	if failed {
		kind = "failed"
	}
	h.Write([]byte("\x00" + string(cause) + "\x00" + kind))
	if mailaddr.Hostname(domain) != nil {
		domain = "popconnector.invalid"
	}
	c := string(cause)
	if c == "" {
		c = "none"
	}
	return "popconn.notice." + c + "." + kind + "." + hex.EncodeToString(h.Sum(nil)[:12]) + "@" + domain
}

// formatSize is a byte count for people: "31457280 bytes (30.0 MiB)".
func formatSize(n int64) string {
	s := strconv.FormatInt(n, 10) + " bytes"
	if n >= 1<<20 {
		s += fmt.Sprintf(" (%.1f MiB)", float64(n)/(1<<20))
	}
	return s
}

// formatDate is RFC 5322 §3.3 date-time.
func formatDate(t time.Time) string { return t.Format("Mon, 02 Jan 2006 15:04:05 -0700") }

// cleanText makes untrusted text safe for one line of a header or body:
// invalid UTF-8 becomes U+FFFD, controls (C0 including CR, LF and tab,
// DEL, C1) and Unicode line, paragraph and bidi-control characters become
// spaces, runs of spaces collapse, and the result is cut to max runes.
func cleanText(s string, max int) string {
	var b strings.Builder
	space := false
	n := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' ||
			unicode.Is(unicode.Bidi_Control, r) || unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			if n+1 >= max {
				break
			}
			b.WriteByte(' ')
			n++
			space = false
		}
		if n >= max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// asciiText is cleanText with every non-ASCII character replaced by "?".
func asciiText(s string, max int) string {
	c := cleanText(s, max)
	var b strings.Builder
	for _, r := range c {
		if r > '~' {
			if r == '…' {
				b.WriteString("...")
				continue
			}
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// bareAddress validates a configured address by mailaddr's Mailbox rule:
// no display name, quotes, controls or spaces.
func bareAddress(what, s string) (string, error) {
	if err := mailaddr.Mailbox(s); err != nil {
		return "", fmt.Errorf("%w: %s %q is not a bare email address: %v", ErrInvalid, what, s, err)
	}
	return s, nil
}

// plainAddress reports an address that can be written as is: valid UTF-8,
// no controls or spaces, one "@" with text on both sides.
func plainAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// addressValue formats an address for Original-/Final-Recipient:
// "rfc822; addr" for ASCII, RFC 6533 §3 "utf-8; " utf-8-addr-xtext for an
// internationalised address (the part stays 7-bit).
func addressValue(addr string) (string, error) {
	if !plainAddress(addr) {
		return "", fmt.Errorf("%q is not an address", addr)
	}
	ascii := true
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return "rfc822; " + addr, nil
	}
	var b strings.Builder
	for _, r := range addr {
		if r >= 0x21 && r <= 0x7e && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return "utf-8; " + b.String(), nil
}

// xtext encodes s per RFC 3461 §4 (ENVID travels xtext-encoded).
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x21 && c <= 0x7e && c != '+' && c != '=' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "+%02X", c)
		}
	}
	return b.String()
}

func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validMTAName accepts a host name, an IP address or an address literal.
func validMTAName(s string) bool {
	return mailaddr.Host(s) == nil || mailaddr.AddressLiteral(s) == nil
}

// validMsgID accepts id-left "@" id-right of dot-atom text (RFC 5322
// §3.6.4), which cannot carry CR, LF, spaces or brackets.
func validMsgID(id string) bool {
	left, right, ok := strings.Cut(id, "@")
	if !ok || left == "" || right == "" || strings.Contains(right, "@") || len(id) > 900 {
		return false
	}
	for _, part := range []string{left, right} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c <= ' ' || c > '~' || strings.IndexByte(`()<>[]:;@\,"`, c) >= 0 {
				return false
			}
		}
	}
	return true
}

func domainOf(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}
