package notify

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/relay"
)

func reply(op string, code int, enh, msg string) *relay.Error {
	return &relay.Error{Op: op, Code: code, Enhanced: enh, Message: msg, Temporary: code/100 != 5}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  *relay.Error
		want Cause
	}{
		{"nil", nil, CauseNone},
		// Exchange's Content Filter agent (seed 000: 550 5.7.1).
		{"exchange content filter", reply("data", 550, "5.7.1", "Message rejected as spam by Content Filtering."), CauseSpam},
		// seed 000: 554 5.7.1, whatever the text.
		{"554 5.7.1 plain", reply("data", 554, "5.7.1", "Message rejected"), CauseSpam},
		{"connection filtering", reply("rcpt", 554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"), CauseSpam},
		{"sender id", reply("data", 550, "5.7.1", "Sender ID (PRA) Not Permitted"), CauseSpam},
		{"spf", reply("rcpt", 550, "5.7.23", "The message was rejected because of Sender Policy Framework violation"), CauseSpam},
		{"dmarc", reply("data", 550, "5.7.509", "Access denied, sending domain example.net does not pass DMARC verification"), CauseSpam},
		{"malware", reply("data", 554, "5.6.1", "Malware detected in attachment"), CauseSpam},
		{"banned ip", reply("rcpt", 550, "5.7.606", "Access denied, banned sending IP [192.0.2.1]"), CauseSpam},
		// seed 000: 554 5.1.0 is Exchange's Sender Filter.
		{"sender filter", reply("rcpt", 554, "5.1.0", "Sender denied"), CauseSpam},
		{"sender refused at MAIL", reply("mail", 550, "5.1.8", "Bad sender's system address"), CauseSpam},
		{"spam at MAIL without enhanced", reply("mail", 550, "", "Rejected: client listed on an RBL"), CauseSpam},
		{"spamhaus", reply("rcpt", 550, "", "Blocked - see https://www.spamhaus.org/query/ip/192.0.2.1"), CauseSpam},
		// seed 004: a relay refusal is configuration, never spam.
		{"seed 004 unable to relay", reply("rcpt", 550, "5.7.1", "Unable to relay for recipient@contoso.com"), CauseRelayDenied},
		{"postfix relay access denied", reply("rcpt", 554, "5.7.1", "<a@fabrikam.example>: Relay access denied"), CauseRelayDenied},
		{"exchange online non-accepted domain", reply("rcpt", 550, "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain"), CauseRelayDenied},
		{"tenant attribution", reply("rcpt", 550, "5.7.64", "TenantAttribution; Relay Access Denied"), CauseRelayDenied},
		{"send as permission", reply("mail", 550, "5.7.1", "Client does not have permissions to send as this sender"), CauseRelayDenied},
		{"not authenticated", reply("mail", 530, "5.7.57", "Client not authenticated to send mail"), CauseRelayDenied},
		{"must starttls", reply("mail", 530, "5.7.0", "Must issue a STARTTLS command first"), CauseRelayDenied},
		// Unknown recipients.
		{"exchange user unknown", reply("rcpt", 550, "5.1.1", "User unknown"), CauseUnknownRecipient},
		{"postfix virtual table", reply("rcpt", 550, "5.1.1", "<x@corp.example>: Recipient address rejected: User unknown in virtual mailbox table"), CauseUnknownRecipient},
		{"exchange online not found", reply("rcpt", 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"), CauseUnknownRecipient},
		{"5.1.0 at rcpt", reply("rcpt", 550, "5.1.0", "Address rejected"), CauseUnknownRecipient},
		{"mailbox moved", reply("rcpt", 550, "5.1.6", "Recipient mailbox has moved"), CauseUnknownRecipient},
		{"no enhanced code", reply("rcpt", 550, "", "No such user here"), CauseUnknownRecipient},
		{"does not exist", reply("rcpt", 550, "5.2.1", "The email account that you tried to reach does not exist"), CauseUnknownRecipient},
		// Other permanent refusals.
		{"generic mailbox unavailable", reply("rcpt", 550, "", "Requested action not taken: mailbox unavailable"), CauseOther},
		// Too large (item 6 of "nothing lost and nothing doubled").
		{"too big", reply("data", 552, "5.3.4", "Message size exceeds fixed maximum message size"), CauseTooLarge},
		{"552 without enhanced", reply("mail", 552, "", "Message size exceeds fixed limit"), CauseTooLarge},
		{"exchange recipient size limit", reply("rcpt", 550, "5.2.3", "RESOLVER.RST.RecipSizeLimit; message too large for this recipient"), CauseTooLarge},
		{"5.3.4 under another code", reply("data", 554, "5.3.4", "Message too big for system"), CauseTooLarge},
		// The relay's own SIZE check (internal/relay: Send), nothing sent.
		{"local size check", &relay.Error{Op: "mail", Code: 552, Enhanced: "5.3.4",
			Message: "message size 31457280 exceeds the server's limit of 10485760 (RFC 1870); not sent", Local: true}, CauseTooLarge},
		{"552 spam", reply("data", 552, "5.7.1", "Message rejected as spam"), CauseSpam},
		{"temporary 452 4.3.1", reply("mail", 452, "4.3.1", "Insufficient system storage"), CauseNone},
		{"restricted recipient", reply("rcpt", 550, "5.7.1", "Delivery not authorized, message refused"), CauseOther},
		{"mailbox full", reply("data", 552, "5.2.2", "Mailbox full"), CauseOther},
		{"mailbox full at rcpt", reply("rcpt", 552, "5.2.2", "Quota exceeded"), CauseOther},
		// Words inside other words do not count.
		{"garbled", reply("data", 554, "5.6.0", "Message garbled"), CauseOther},
		{"not listed", reply("rcpt", 550, "", "Recipient not listed in public directory"), CauseOther},
		{"local smtputf8", &relay.Error{Op: "mail", Message: "the server does not support SMTPUTF8", Local: true}, CauseOther},
		// Temporary: retried, not reported.
		{"greylisting", reply("rcpt", 451, "4.7.1", "Greylisted, try again later"), CauseNone},
		{"temporary spam words", reply("data", 451, "4.7.1", "Spam scan unavailable"), CauseNone},
		{"network", &relay.Error{Op: "connect", Message: "connection refused", Temporary: true}, CauseNone},
		{"421", reply("data", 421, "4.3.2", "Service not available"), CauseNone},
	}
	for _, tc := range tests {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestNoticeRefusedPermanently(t *testing.T) {
	perm := reply("data", 550, "5.7.1", "Message rejected as spam by Content Filtering.")
	temp := reply("rcpt", 451, "4.7.1", "Greylisted")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"5xx reply", perm, true},
		{"5xx at rcpt", reply("rcpt", 550, "5.1.1", "User unknown"), true},
		{"wrapped 5xx", fmt.Errorf("notice to a@corp.example: %w", perm), true},
		{"4xx reply", temp, false},
		{"421", reply("data", 421, "4.3.2", "Service not available"), false},
		{"connection refused", &relay.Error{Op: "connect", Message: "connection refused", Temporary: true}, false},
		{"5xx marked temporary", &relay.Error{Op: "data", Code: 554, Message: "odd", Temporary: true}, false},
		{"local permanent without code", &relay.Error{Op: "mail", Message: "no SMTPUTF8", Local: true}, false},
		{"local size check", &relay.Error{Op: "mail", Code: 552, Enhanced: "5.3.4", Message: "message size exceeds the server's limit", Local: true}, true},
		{"unknown error", errors.New("no route to the notice address"), false},
		{"auth refused", reply("auth", 535, "5.7.8", "Authentication credentials invalid"), false},
		{"greeting refused", reply("connect", 554, "5.7.1", "No SMTP service here"), false},
		{"ehlo refused", reply("ehlo", 550, "5.5.1", "Command refused"), false},
		{"relay denied at rcpt", reply("rcpt", 550, "5.7.1", "Unable to relay for postmaster@corp.example"), false},
		{"starttls required at mail", reply("mail", 530, "5.7.0", "Must issue a STARTTLS command first"), false},
		{"typed nil", (*relay.Error)(nil), false},
		{"joined, all permanent", errors.Join(perm, reply("rcpt", 554, "5.7.1", "no")), true},
		{"joined, one temporary", errors.Join(perm, temp), false},
		{"joined, unknown", errors.Join(perm, errors.New("dial: timeout")), false},
	}
	for _, tc := range tests {
		if got := NoticeRefusedPermanently(tc.err); got != tc.want {
			t.Errorf("%s: NoticeRefusedPermanently(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestParseReplyCode(t *testing.T) {
	tests := []struct {
		in   string
		want ReplyCode
		err  string
	}{
		{"550 5.7.1", ReplyCode{550, "5.7.1"}, ""},
		{" 554  5.1.0 ", ReplyCode{554, "5.1.0"}, ""},
		{"550", ReplyCode{550, ""}, ""},
		{"550 5.1.10", ReplyCode{550, "5.1.10"}, ""},
		// The seed's typo "5550 5.7.1" is refused rather than guessed.
		{"5550 5.7.1", ReplyCode{}, `"5550" is not a three-digit SMTP reply code`},
		{"", ReplyCode{}, "want a code"},
		{"550 5.7.1 extra", ReplyCode{}, "want a code"},
		{"650 5.7.1", ReplyCode{}, "not a three-digit"},
		{"abc", ReplyCode{}, "not a three-digit"},
		{"550 5.7", ReplyCode{}, "not an enhanced status code"},
		{"550 5.07.1", ReplyCode{}, "not an enhanced status code"},
		{"550 4.7.1", ReplyCode{}, "classes of 550 and 4.7.1 differ"},
		{"550 3.7.1", ReplyCode{}, "not an enhanced status code"},
	}
	for _, tc := range tests {
		got, err := ParseReplyCode(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseReplyCode(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseReplyCode(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if again, err := ParseReplyCode(got.String()); err != nil || again != got {
			t.Errorf("round trip of %q: %v, %v", got.String(), again, err)
		}
	}
}

func TestDeletable(t *testing.T) {
	// The seed's codes for "Delete the message permanently".
	var codes []ReplyCode
	for _, s := range []string{"550 5.7.1", "554 5.7.1", "554 5.1.0"} {
		c, err := ParseReplyCode(s)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, c)
	}
	tests := []struct {
		name string
		err  *relay.Error
		want bool
	}{
		{"content filter", reply("data", 550, "5.7.1", "Message rejected as spam by Content Filtering."), true},
		{"554 5.7.1", reply("data", 554, "5.7.1", "Message rejected"), true},
		{"sender filter", reply("rcpt", 554, "5.1.0", "Sender denied"), true},
		// Same code as the spam filter, but a configuration problem:
		// deleting would lose every message (seed 004).
		{"unable to relay", reply("rcpt", 550, "5.7.1", "Unable to relay for recipient@contoso.com"), false},
		{"relay access denied", reply("rcpt", 554, "5.7.1", "<a@x.example>: Relay access denied"), false},
		{"send-as permission", reply("mail", 550, "5.7.1", "Client does not have permissions to send as this sender"), false},
		{"unlisted code", reply("rcpt", 550, "5.1.1", "User unknown"), false},
		{"right code, other enhanced", reply("data", 550, "5.7.2", "x"), false},
		{"temporary", reply("data", 451, "4.7.1", "try later"), false},
		{"local", &relay.Error{Op: "data", Code: 550, Enhanced: "5.7.1", Local: true}, false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		if got := Deletable(tc.err, codes); got != tc.want {
			t.Errorf("%s: Deletable = %v, want %v", tc.name, got, tc.want)
		}
	}
	if Deletable(reply("data", 550, "5.7.1", "spam"), nil) {
		t.Error("Deletable with no codes")
	}
	any550, _ := ParseReplyCode("550")
	if !any550.Matches(reply("rcpt", 550, "5.1.1", "x")) || any550.Matches(reply("rcpt", 554, "5.1.1", "x")) {
		t.Error("a bare code must match any enhanced code of that reply code only")
	}
	if !errors.Is(BuildDSN(nil, Notice{}), ErrInvalid) {
		t.Error("BuildDSN(empty) is not ErrInvalid")
	}
}
