package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// Error is the outcome of a failed step: a reply from the server, or a
// network, TLS or local failure.
type Error struct {
	// Op is the step that failed: "connect", "tls", "ehlo", "auth", "rset",
	// "mail", "rcpt", "data" or "quit".
	Op string
	// Code is the basic reply code (RFC 5321 §4.2), 0 when the server gave
	// none (network failure, local refusal without an SMTP equivalent).
	Code int
	// Enhanced is the enhanced status code (RFC 3463), e.g. "5.7.1", if any.
	Enhanced string
	// Message is the server's reply text, or a description of the failure.
	// It never contains the password.
	Message string
	// Temporary reports whether a later attempt can succeed: true for 4xx
	// replies, network failures, timeouts and anything unknown; false for
	// 5xx replies and local refusals that cannot change.
	Temporary bool
	// Local is true when this client produced the error without a server
	// reply saying so (for example a SIZE limit checked before sending).
	Local bool
	// Err is the underlying error, if any.
	Err error
}

// Error formats e as "smtp OP: CODE ENHANCED MESSAGE".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Code != 0 {
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(' ')
	}
	if e.Enhanced != "" {
		b.WriteString(e.Enhanced)
		b.WriteByte(' ')
	}
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	} else if e.Code == 0 && e.Err != nil {
		if detail := e.Err.Error(); detail != "" && !strings.Contains(msg, detail) {
			msg += ": " + detail
		}
	}
	if msg == "" {
		msg = "unknown failure"
	}
	b.WriteString(strings.ReplaceAll(msg, "\n", " / "))
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// AsError classifies any error as an *Error. An *Error anywhere in err's chain
// is returned as is; an SMTP reply keeps its codes; anything else, network or
// unknown, is temporary. AsError(nil) is nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return classify("", err)
}

// classify turns an error from go-smtp, net, tls or context into an *Error
// for step op.
func classify(op string, err error) *Error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyError(op, se.Code, enhanced(se.EnhancedCode), se.Message, err)
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		converted := toSMTPError(te)
		return replyError(op, converted.Code, enhanced(converted.EnhancedCode), converted.Message, err)
	}
	return &Error{Op: op, Message: describe(err), Temporary: true, Err: err}
}

func replyError(op string, code int, enh, msg string, err error) *Error {
	return &Error{
		Op:       op,
		Code:     code,
		Enhanced: enh,
		Message:  msg,
		// Only a 5xx reply is a definite "no"; 4xx and anything odd (a 2xx or
		// 3xx where another was expected) may go differently next time.
		Temporary: code/100 != 5,
		Err:       err,
	}
}

// toSMTPError parses a textproto reply the way go-smtp does, so that replies
// read outside go-smtp (STARTTLS) carry the same enhanced code.
func toSMTPError(te *textproto.Error) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	first, rest, ok := strings.Cut(te.Msg, " ")
	if !ok {
		return se
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return se
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return se
		}
		ec[i] = n
	}
	se.EnhancedCode = ec
	se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return se
}

// enhanced formats an RFC 3463 code, or "" when the reply had none. Only
// classes 2, 4 and 5 exist (RFC 3463 §3.1).
func enhanced(ec smtp.EnhancedCode) string {
	switch ec[0] {
	case 2, 4, 5:
	default:
		return ""
	}
	if ec[1] < 0 || ec[2] < 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
}

// describe explains a non-reply failure in words an operator can act on.
func describe(err error) string {
	var (
		certErr     *tls.CertificateVerificationError
		hostErr     x509.HostnameError
		unknownAuth x509.UnknownAuthorityError
		invalidCert x509.CertificateInvalidError
		recordErr   tls.RecordHeaderError
		netErr      net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	case errors.As(err, &hostErr):
		m := mismatch(hostErr)
		return fmt.Sprintf("TLS certificate does not match the server name %s: it is for %s (set server_name to one of those names)", m.Checked, m.Names())
	case errors.As(err, &unknownAuth), errors.As(err, &certErr), errors.As(err, &invalidCert):
		return "TLS certificate verification failed"
	case errors.As(err, &recordErr):
		return "TLS handshake failed: the server did not speak TLS"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out waiting for the server"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out waiting for the server"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "connection closed by the server"
	case errors.As(err, new(textproto.ProtocolError)):
		return "malformed reply from the server"
	}
	return err.Error()
}

// connectionLost reports whether err leaves the connection unusable: anything
// but a plain SMTP reply, and a 421 reply (service closing, RFC 5321 §3.8).
func connectionLost(e *Error) bool {
	var se *smtp.SMTPError
	var te *textproto.Error
	if !errors.As(e.Err, &se) && !errors.As(e.Err, &te) {
		return true
	}
	return e.Code == 421
}

// scrubbed returns e with every secret removed from its message and from the
// server reply it wraps.
func (s secrets) scrubError(e *Error) *Error {
	if len(s) == 0 || e == nil {
		return e
	}
	msg := s.scrub(e.Message)
	if msg == e.Message {
		if e.Err == nil || s.scrub(e.Err.Error()) == e.Err.Error() {
			return e
		}
	}
	out := *e
	out.Message = msg
	if out.Err != nil && s.scrub(out.Err.Error()) != out.Err.Error() {
		var se *smtp.SMTPError
		if errors.As(out.Err, &se) {
			out.Err = &smtp.SMTPError{Code: se.Code, EnhancedCode: se.EnhancedCode, Message: s.scrub(se.Message)}
		} else {
			out.Err = errors.New(s.scrub(out.Err.Error()))
		}
	}
	return &out
}

// Mismatch is a server certificate that does not name the host checked.
type Mismatch struct {
	// Checked is the name the certificate was checked against: server_name
	// when set, otherwise the host connected to (possibly an IP address).
	Checked string
	// DNSNames and IPs are the names the certificate is valid for.
	DNSNames []string
	IPs      []string
}

// Names lists the certificate's names for a message: at most five, then
// how many more.
func (m *Mismatch) Names() string {
	all := append(append([]string(nil), m.DNSNames...), m.IPs...)
	if len(all) == 0 {
		return "no host name"
	}
	const show = 5
	if len(all) > show {
		return strings.Join(all[:show], ", ") + fmt.Sprintf(" and %d more", len(all)-show)
	}
	return strings.Join(all, ", ")
}

// CertificateMismatch returns the mismatch err holds (a certificate valid
// for other names than the one checked), or nil.
func CertificateMismatch(err error) *Mismatch {
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		return nil
	}
	return mismatch(hostErr)
}

func mismatch(h x509.HostnameError) *Mismatch {
	m := &Mismatch{Checked: h.Host}
	if h.Certificate != nil {
		m.DNSNames = h.Certificate.DNSNames
		for _, ip := range h.Certificate.IPAddresses {
			m.IPs = append(m.IPs, ip.String())
		}
	}
	return m
}
