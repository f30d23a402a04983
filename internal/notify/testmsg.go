package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// TestNotice is what TestMessage needs.
type TestNotice struct {
	// From and To are bare addresses, normally both the postmaster.
	From, To string
	// ReportingMTA is this connector's host name.
	ReportingMTA string
	// Now is the message's Date. Required.
	Now time.Time
	// Settings are lines shown in the body, e.g. "notify on spam: yes",
	// "delivery: exchange.corp.example:25 (starttls)". Cleaned like any
	// other text; they must hold no secret.
	Settings []string
	// MessageID, without brackets, overrides the one derived from Now and
	// To.
	MessageID string
}

// TestMessage writes the plain test message of `popconn test-notify` to w:
// a short text/plain message to the postmaster that proves notices reach
// them (the POPcon manual's "Test settings (email to postmaster)"). Relay
// it like a notice, with the null reverse-path.
func TestMessage(w io.Writer, n TestNotice) error {
	from, to, err := checkAddressing(n.From, n.To, n.ReportingMTA)
	if err != nil {
		return err
	}
	if n.Now.IsZero() {
		return fmt.Errorf("%w: Now is not set", ErrInvalid)
	}
	id := n.MessageID
	if id == "" {
		sum := sha256.Sum256([]byte(n.Now.UTC().Format(time.RFC3339Nano) + "\x00" + to))
		id = "popconn.test." + hex.EncodeToString(sum[:12]) + "@" + domainOf(from)
	} else if !validMsgID(id) {
		return fmt.Errorf("%w: Message-ID %q is not id-left@id-right", ErrInvalid, id)
	}

	var h mail.Header
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	h.Set("MIME-Version", "1.0")
	h.Set("Auto-Submitted", "auto-generated")
	h.Set("X-Popconn-Notice", string(CauseTest))
	h.SetMessageID(id)
	h.SetSubject("popconnector test notification from " + n.ReportingMTA)
	h.SetDate(n.Now)
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetAddressList("From", []*mail.Address{{Name: "popconnector", Address: from}})

	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\r\n") }
	line("This is a test notification from popconnector on " + n.ReportingMTA + ", sent " + formatDate(n.Now) + ".")
	line("")
	line("If you are reading it, notices to the postmaster (" + to + ") reach you: rejected messages,")
	line("unknown recipients and messages set aside will be reported here as the settings below say.")
	if len(n.Settings) > 0 {
		line("")
		line("Settings:")
		for _, s := range n.Settings {
			if s = cleanText(s, 300); s != "" {
				line("  " + s)
			}
		}
	}
	line("")
	line("No action is needed.")

	bw, err := gomessage.CreateWriter(w, h.Header)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := io.WriteString(bw, b.String()); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}
