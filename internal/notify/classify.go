package notify

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/popconnector/popconnector/internal/relay"
)

// Cause is why the postmaster is told about a message. The values are the
// notification switches of the POPcon manual plus the connector's own.
type Cause string

const (
	// CauseNone: nothing to report (accepted, or a temporary failure that
	// will be retried).
	CauseNone Cause = ""
	// CauseSpam: Exchange's anti-spam or content filtering refused the
	// message (content filter, sender filter, connection filtering, SPF,
	// DMARC, malware).
	CauseSpam Cause = "spam"
	// CauseUnknownRecipient: Exchange does not know the recipient address.
	CauseUnknownRecipient Cause = "unknown-recipient"
	// CauseRelayDenied: Exchange refused the connector itself: it may not
	// relay to the recipient's domain (accepted domains / recipient policy,
	// Microsoft KB 325464), or may not submit at all (receive connector
	// permissions, authentication, "must issue STARTTLS"). The configuration
	// is wrong, not the message; never a reason to delete mail.
	CauseRelayDenied Cause = "relay-denied"
	// CauseBadmail: the connector gave up on a message and set it aside.
	CauseBadmail Cause = "badmail"
	// CauseTooLarge: the message is larger than Exchange accepts, by
	// Exchange's reply (552, X.3.4, X.2.3) or by the SIZE it advertised
	// (the relay's own check, which sends nothing). No retry helps until
	// a limit is raised.
	CauseTooLarge Cause = "too-large"
	// CauseHeld: the POP3 server keeps sending a message with other bytes
	// than it lists (the connector's own finding, not Exchange's): it is
	// neither relayed nor deleted, and stays on the POP3 server.
	CauseHeld Cause = "held"
	// CauseTest: a test notice (popconn test-notify).
	CauseTest Cause = "test"
	// CauseOther: any other permanent rejection.
	CauseOther Cause = "other"
)

// Classify says why Exchange refused a message, from its reply. A nil or
// temporary error is CauseNone: the message will be retried. The rules,
// in order:
//
//  1. Refusals of the connector itself are CauseRelayDenied, whatever the
//     code: "Unable to relay", Postfix's "554 5.7.1 ... Relay access
//     denied", 5.7.54, 5.7.64, 5.7.57, any 530 reply, "does not have
//     permissions to send as this sender", "authentication required". They
//     come from configuration, not from the message.
//  2. A message too large is CauseTooLarge: X.3.4 ("message too big for
//     system", also the relay's local SIZE refusal, 552 5.3.4), X.2.3
//     (Exchange's "550 5.2.3 RESOLVER.RST.RecipSizeLimit"), or a 552 whose
//     enhanced code, if any, is X.3.x. A 552 5.2.2 (mailbox full) is not:
//     552 also means "exceeded storage allocation".
//  3. X.1.1, X.1.10 (recipient not found), X.1.6 (moved), X.1.0 or X.1.3 at
//     RCPT, and texts such as "user unknown", "no such user", "recipient
//     not found" are CauseUnknownRecipient. A X.1.x refusal of the sender
//     (at MAIL, or "sender denied": Exchange's Sender Filter answers 554
//     5.1.0) is spam filtering.
//  4. 554 5.7.1, sender-authentication failures (5.7.23 SPF, 5.7.25
//     reverse DNS, 5.7.26 and 5.7.509 DMARC/authentication, 5.7.510), and
//     any 5xx whose text speaks of spam,
//     block lists, reputation, content filtering or malware are CauseSpam.
//  5. Any other permanent refusal, including local ones, is CauseOther.
func Classify(e *relay.Error) Cause {
	if e == nil || e.Temporary {
		return CauseNone
	}
	text := strings.ToLower(e.Message)
	enh := e.Enhanced
	switch {
	case isRelayDenied(e.Code, enh, text):
		return CauseRelayDenied
	case isTooLarge(e.Code, enh):
		return CauseTooLarge
	case e.Code == 0 && e.Local:
		return CauseOther
	case isSenderRefusal(e, enh, text):
		return CauseSpam
	case isUnknownRecipient(e, enh, text):
		return CauseUnknownRecipient
	case e.Code == 554 && enh == "5.7.1",
		enh == "5.7.23", enh == "5.7.25", enh == "5.7.26", enh == "5.7.509", enh == "5.7.510",
		containsAny(text, spamWords):
		return CauseSpam
	}
	return CauseOther
}

var refusedWords = []string{
	"unable to relay", "relay access denied", "relaying denied", "relay denied",
	"relay not permitted", "relaying not permitted", "not permitted to relay",
	"relaying not allowed", "relay not allowed", "we do not relay", "relaying disallowed",
	"not allowed to relay",
	"does not have permissions to send", "not authorized to send", "not authenticated",
	"authentication required", "must authenticate", "must issue a starttls",
}

var unknownWords = []string{
	"user unknown", "unknown user", "no such user", "no such recipient", "unknown recipient",
	"recipient unknown", "recipient not found", "recipientnotfound", "invalid recipient",
	"recipient address rejected: user unknown", "mailbox not found", "no mailbox here",
	"address unknown", "unknown address", "does not exist", "doesn't exist", "user not found",
	"no such mailbox", "unrouteable address", "unroutable address",
}

var spamWords = []string{
	"spam", "junk", "bulk mail", "blacklist", "blocklist", "block list", "black list",
	"blocked using", "dnsbl", "rbl", "reputation",
	"content filter", "content-filter", "rejected due to content", "message content rejected",
	"virus", "malware", "phish", "infected", "banned sending ip",
	"sender id", "spf", "dkim", "dmarc",
}

// containsAny reports whether s holds one of words at the start of a word,
// so that "rbl" matches "RBL" and "spam" matches "spamhaus" but "rbl" is
// not found in "garbled".
func containsAny(s string, words []string) bool {
	for _, w := range words {
		for i := 0; ; {
			j := strings.Index(s[i:], w)
			if j < 0 {
				break
			}
			j += i
			if j == 0 || !isWordByte(s[j-1]) {
				return true
			}
			i = j + 1
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isRelayDenied(code int, enh, text string) bool {
	return code == 530 || enh == "5.7.54" || enh == "5.7.64" || enh == "5.7.57" || containsAny(text, refusedWords)
}

func isTooLarge(code int, enh string) bool {
	switch {
	case enh == "5.3.4", enh == "5.2.3":
		return true
	case code == 552:
		return enh == "" || strings.HasPrefix(enh, "5.3.")
	}
	return false
}

// isSenderRefusal reports a refusal of the sender address: Exchange's
// Sender Filter ("554 5.1.0 Sender denied") and its kind, at MAIL FROM or
// saying "sender".
func isSenderRefusal(e *relay.Error, enh, text string) bool {
	if !strings.HasPrefix(enh, "5.1.") && !strings.HasPrefix(enh, "5.7.") && enh != "" {
		return false
	}
	if e.Op == "mail" && (strings.HasPrefix(enh, "5.1.") || strings.HasPrefix(enh, "5.7.") || containsAny(text, spamWords)) {
		return true
	}
	return strings.HasPrefix(enh, "5.1.") && (strings.Contains(text, "sender denied") || strings.Contains(text, "sender rejected") ||
		strings.Contains(text, "sender address rejected") || strings.Contains(text, "sender blocked"))
}

func isUnknownRecipient(e *relay.Error, enh, text string) bool {
	switch enh {
	case "5.1.1", "5.1.10", "5.1.6":
		return true
	case "5.1.0", "5.1.3", "5.1.2":
		if e.Op == "rcpt" {
			return true
		}
	}
	return containsAny(text, unknownWords)
}

// NoticeRefusedPermanently reports whether sending a notice failed for good:
// err is (or wraps) a *relay.Error with a 5xx reply code that is not
// Temporary, given to the notice itself: at MAIL (the null sender), RCPT
// (the notice address) or DATA (its content). That is the SMTP server's
// reply, or a refusal the relay made itself before sending (a SIZE over
// the server's limit), which it will make again. Sending the same notice
// again is then pointless: the caller should record it as refused rather
// than retry it every interval.
//
// Anything else is false and may succeed later: nil, a 4xx reply, a
// refusal of the connector itself (CauseRelayDenied, whatever the step: a
// wrong password or a receive connector's permissions get fixed), a 5xx
// at the greeting, EHLO, STARTTLS or AUTH, a connection, TLS or timeout
// failure, and an error of unknown kind. An error that joins several
// (errors.Join, one per route tried) is permanent only if each of them
// is.
func NoticeRefusedPermanently(err error) bool {
	switch x := err.(type) {
	case *relay.Error:
		if x == nil || x.Temporary || x.Code < 500 || x.Code > 599 || Classify(x) == CauseRelayDenied {
			return false
		}
		return x.Op == "mail" || x.Op == "rcpt" || x.Op == "data"
	case interface{ Unwrap() []error }:
		errs := x.Unwrap()
		for _, err := range errs {
			if !NoticeRefusedPermanently(err) {
				return false
			}
		}
		return len(errs) > 0
	case interface{ Unwrap() error }:
		return NoticeRefusedPermanently(x.Unwrap())
	}
	return false
}

// ReplyCode is an SMTP reply code with an optional enhanced status code,
// as written in the undeliverable options ("550 5.7.1").
type ReplyCode struct {
	Code     int    // 200..599
	Enhanced string // "5.7.1", or "" to match any
}

// ParseReplyCode parses "550 5.7.1" or "550".
func ParseReplyCode(s string) (ReplyCode, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return ReplyCode{}, fmt.Errorf("reply code %q: want a code and an enhanced status code, e.g. \"550 5.7.1\"", s)
	}
	code, err := strconv.Atoi(f[0])
	if err != nil || len(f[0]) != 3 || code < 200 || code > 599 {
		return ReplyCode{}, fmt.Errorf("reply code %q: %q is not a three-digit SMTP reply code", s, f[0])
	}
	rc := ReplyCode{Code: code}
	if len(f) == 2 {
		if !validStatus(f[1]) {
			return ReplyCode{}, fmt.Errorf("reply code %q: %q is not an enhanced status code (RFC 3463), e.g. 5.7.1", s, f[1])
		}
		if f[1][0] != f[0][0] {
			return ReplyCode{}, fmt.Errorf("reply code %q: the classes of %s and %s differ", s, f[0], f[1])
		}
		rc.Enhanced = f[1]
	}
	return rc, nil
}

// String formats c as it is parsed.
func (c ReplyCode) String() string {
	if c.Enhanced == "" {
		return strconv.Itoa(c.Code)
	}
	return strconv.Itoa(c.Code) + " " + c.Enhanced
}

// Matches reports whether e is a server reply with c's codes.
func (c ReplyCode) Matches(e *relay.Error) bool {
	if e == nil || e.Local || e.Code != c.Code {
		return false
	}
	return c.Enhanced == "" || c.Enhanced == e.Enhanced
}

// Deletable reports whether a rejection allows deleting the message from
// the POP3 server under the undeliverable option "delete": the reply is a
// permanent server reply listed in codes, and not a relay refusal. A relay
// refusal ("550 5.7.1 Unable to relay") shares its code with the spam
// filter's but means the connector or Exchange is misconfigured; deleting
// on it would lose every message.
func Deletable(e *relay.Error, codes []ReplyCode) bool {
	if e == nil || e.Temporary || e.Local || Classify(e) == CauseRelayDenied {
		return false
	}
	for _, c := range codes {
		if c.Matches(e) {
			return true
		}
	}
	return false
}

// validStatus checks an RFC 3463 status code: class "." subject "."
// detail, class 2, 4 or 5, subject and detail of 1..3 digits without
// leading zeros.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || (len(p) > 1 && p[0] == '0') || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}
