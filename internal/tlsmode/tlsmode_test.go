package tlsmode

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		p       Protocol
		m       Mode
		wantErr string // "" = accepted
	}{
		{POP3, Implicit, ""},
		{POP3, StartTLS, ""},
		{POP3, None, ""},
		{POP3, Opportunistic, `POP3 has no "opportunistic" mode`},
		{POP3, "", `must be one of implicit, starttls, none; got ""`},
		{POP3, "ssl", `must be one of implicit, starttls, none; got "ssl"`},
		{POP3, "STARTTLS", `got "STARTTLS"`},
		{SMTP, StartTLS, ""},
		{SMTP, Opportunistic, ""},
		{SMTP, Implicit, ""},
		{SMTP, None, ""},
		{SMTP, "", `must be one of starttls, opportunistic, implicit, none; got ""`},
		{SMTP, "tls", `got "tls"`},
		{"IMAP", Implicit, "must be one of ; got"},
	}
	for _, tt := range tests {
		err := tt.p.Check(tt.m)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s.Check(%q) = %v, want nil", tt.p, tt.m, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s.Check(%q) = %v, want an error containing %q", tt.p, tt.m, err, tt.wantErr)
		case tt.wantErr != "" && !errors.Is(err, ErrUnsupported):
			t.Errorf("%s.Check(%q) = %v, does not match ErrUnsupported", tt.p, tt.m, err)
		}
	}
}

// The constants are the configuration file's spellings; changing one
// would break users' files.
func TestSpellings(t *testing.T) {
	for m, want := range map[Mode]string{None: "none", Implicit: "implicit", StartTLS: "starttls", Opportunistic: "opportunistic"} {
		if string(m) != want {
			t.Errorf("Mode %q, want %q", m, want)
		}
	}
}
