// Package tlsmode names how a POP3 or SMTP connection is protected, in the
// spelling the configuration file uses, and says which protocol accepts
// which mode.
//
// Guarantees: Mode's values are exactly the YAML spellings ("none",
// "implicit", "starttls", "opportunistic"), so a Mode read from the file
// needs no translation. Check accepts only what the protocol's client
// implements: POP3 takes none, implicit and starttls; SMTP also takes
// opportunistic. The empty Mode is refused by both: defaults belong to
// package config, not here.
//
// What it cannot do: it does not negotiate TLS or build a tls.Config; the
// pop3 and relay clients do that.
package tlsmode

import (
	"errors"
	"fmt"
	"strings"
)

// Mode says how a connection is protected.
type Mode string

const (
	// None never encrypts, even when the server offers TLS.
	None Mode = "none"
	// Implicit speaks TLS from the first byte (RFC 8314 §3.3: POP3S on
	// 995, SMTPS on 465).
	Implicit Mode = "implicit"
	// StartTLS connects in plaintext and upgrades with STLS (RFC 2595 §4)
	// or STARTTLS (RFC 3207); the connection fails if the server does not
	// offer it. It never downgrades.
	StartTLS Mode = "starttls"
	// Opportunistic (SMTP only) uses STARTTLS when offered and continues
	// in plaintext otherwise. A failed handshake is still an error.
	Opportunistic Mode = "opportunistic"
)

// Protocol names a client whose modes Check knows.
type Protocol string

const (
	POP3 Protocol = "POP3"
	SMTP Protocol = "SMTP"
)

// ErrUnsupported is matched (errors.Is) by Check's errors.
var ErrUnsupported = errors.New("unsupported TLS mode")

// Modes returns the modes p accepts, in the order messages list them.
func (p Protocol) Modes() []Mode {
	switch p {
	case POP3:
		return []Mode{Implicit, StartTLS, None}
	case SMTP:
		return []Mode{StartTLS, Opportunistic, Implicit, None}
	}
	return nil
}

// Check returns nil if p accepts m, else an error wrapping ErrUnsupported
// that names the modes p accepts. The message reads well after a key:
// "tls: must be one of implicit, starttls, none; got \"ssl\"".
func (p Protocol) Check(m Mode) error {
	for _, ok := range p.Modes() {
		if m == ok {
			return nil
		}
	}
	if p == POP3 && m == Opportunistic {
		return unsupported(fmt.Sprintf("POP3 has no %q mode, because a plaintext fallback would send the password unencrypted; "+
			"use starttls, or implicit for port 995", m))
	}
	return unsupported(fmt.Sprintf("must be one of %s; got %q", p.list(), m))
}

// unsupported is Check's error: its text alone, matching ErrUnsupported.
type unsupported string

func (e unsupported) Error() string        { return string(e) }
func (e unsupported) Is(target error) bool { return target == ErrUnsupported }

func (p Protocol) list() string {
	var names []string
	for _, m := range p.Modes() {
		names = append(names, string(m))
	}
	return strings.Join(names, ", ")
}
