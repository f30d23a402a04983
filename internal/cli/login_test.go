package cli_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/testenv"
)

// test-login against Dovecot: each account problem an administrator meets
// gets its step, a cause and a fix; a good account passes with STAT's
// count; nothing is ever fetched or deleted, and no password is printed.
func TestTestLoginDovecot(t *testing.T) {
	dove := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"sales": popPassword}})
	for i := range 2 {
		dove.Deliver(t, "sales", []byte(fmt.Sprintf("From: a@example.org\r\nSubject: %d\r\n\r\nbody\r\n", i)))
	}
	t.Setenv("CLI_TEST_POP", popPassword)
	t.Setenv("CLI_TEST_WRONG", "not-the-"+popPassword)
	// A port nothing listens on: take one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	ca := dove.CA.CertFile
	tests := []struct {
		name    string
		mailbox string // the flow mapping's keys after id and username
		code    int
		want    []string
	}{
		{"good account", fmt.Sprintf(`server: "%s", tls: implicit, ca_file: %s, server_name: localhost, password: "env:CLI_TEST_POP"`, dove.TLSAddr, ca), 0,
			[]string{"connect: OK (TLS 1.3, certificate verified", "CAPA: ", "UIDL", "login: OK", "STAT: OK, 2 message(s)", "login test passed for 1 mailbox(es)"}},
		{"STLS on the plain port", fmt.Sprintf(`server: "%s", tls: starttls, ca_file: %s, server_name: localhost, password: "env:CLI_TEST_POP"`, dove.Addr, ca), 0,
			[]string{"connect: OK (TLS 1.3, certificate verified", "STAT: OK, 2 message(s)"}},
		{"wrong password", fmt.Sprintf(`server: "%s", tls: implicit, ca_file: %s, server_name: localhost, password: "env:CLI_TEST_WRONG"`, dove.TLSAddr, ca), 1,
			[]string{"login: FAILED: pop3: ", "cause: the server refused the user name or the password", "fix:   check username", "login test FAILED for 1 of 1"}},
		{"refused connection", fmt.Sprintf(`server: "%s", tls: implicit, password: "env:CLI_TEST_POP"`, closed), 1,
			[]string{"connect: FAILED: ", "cause: nothing accepted a POP3 connection at " + closed, "fix:   check server and port"}},
		{"untrusted certificate", fmt.Sprintf(`server: "%s", tls: implicit, server_name: localhost, password: "env:CLI_TEST_POP"`, dove.TLSAddr), 1,
			[]string{"connect: FAILED: ", "cause: the server's certificate is not signed by an authority this host trusts", "fix:   give the issuing CA in ca_file"}},
		{"certificate for another name", fmt.Sprintf(`server: "%s", tls: implicit, ca_file: %s, server_name: pop.other.example, password: "env:CLI_TEST_POP"`, dove.TLSAddr, ca), 1,
			[]string{"connect: FAILED: ", "cause: the server's certificate is for localhost", "not for pop.other.example, the name checked"}},
		{"unset secret", fmt.Sprintf(`server: "%s", tls: implicit, ca_file: %s, server_name: localhost, password: "env:CLI_TEST_UNSET_VAR"`, dove.TLSAddr, ca), 1,
			[]string{"password: FAILED: ", "CLI_TEST_UNSET_VAR is not set", "cause: the password (or OAuth secret) could not be read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeConfig(t, dir, fmt.Sprintf(`postmaster: postmaster@corp.example
delivery: {host: localhost}
archive: {dir: %s}
ledger: {path: %s}
mailboxes:
  - {id: sales, username: sales, %s, deliver_to: [sales@corp.example]}
`, filepath.Join(dir, "archive"), filepath.Join(dir, "ledger.db"), tt.mailbox))
			out := runCLI(t, tt.code, "test-login", "--config", cfg, "--mailbox", "sales")
			t.Logf("test-login printed:\n%s", out)
			wantLines(t, out, tt.want...)
			if strings.Contains(out, popPassword) {
				t.Errorf("the password was printed:\n%s", out)
			}
			if n := dove.Count(t, "sales"); n != 2 {
				t.Errorf("%d messages on the server after the test, want the 2 it had", n)
			}
		})
	}
	t.Run("unknown mailbox", func(t *testing.T) {
		cfg := writeConfig(t, t.TempDir(), fmt.Sprintf("postmaster: postmaster@corp.example\ndelivery: {host: localhost}\nmailboxes:\n  - {id: sales, username: sales, server: \"%s\", tls: implicit, password: \"env:CLI_TEST_POP\", deliver_to: [sales@corp.example]}\n", dove.TLSAddr))
		runCLI(t, 2, "test-login", "--config", cfg, "--mailbox", "nosuch")
	})
}
