package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-smtp"

	"github.com/popconnector/popconnector/internal/cli"
	"github.com/popconnector/popconnector/internal/testenv"
)

const popPassword = "cli-test-pop-Secret-77"

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "popconn.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckConfigExitCodes(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CLI_TEST_POP", popPassword)
	valid := `postmaster: postmaster@corp.example
delivery: {host: exchange.corp.example}
mailboxes:
  - id: sales
    server: pop.isp.example:995
    username: sales
    password: env:CLI_TEST_POP
    deliver_to: [sales@corp.example]
`
	tests := []struct {
		name, body string
		code       int
		stderr     []string
	}{
		{"valid", valid, 0, nil},
		{"unknown key", valid + "surprise: 1\n", 2, []string{"surprise"}},
		{"every problem reported", "postmaster: nobody\ndelivery: {host: exchange}\nmailboxes:\n  - id: Bad Id\n    server: x\n", 2, []string{"mailboxes[0]"}},
		{"missing secret", strings.Replace(valid, "CLI_TEST_POP", "CLI_TEST_UNSET_VAR", 1), 2,
			[]string{"mailboxes[0].password: env:CLI_TEST_UNSET_VAR: environment variable CLI_TEST_UNSET_VAR is not set (line 7)"}},
		// An unset secret is reported with the other problems, not only
		// once they are fixed.
		{"missing secret beside other problems", strings.NewReplacer("CLI_TEST_POP", "CLI_TEST_UNSET_VAR", "postmaster@corp.example", "nobody").Replace(valid), 2,
			[]string{"2 problems", "postmaster: ", "(line 1)", "mailboxes[0].password: env:CLI_TEST_UNSET_VAR: environment variable CLI_TEST_UNSET_VAR is not set (line 7)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, t.TempDir(), tt.body)
			var out, errb bytes.Buffer
			code := cli.Main([]string{"check-config", "--config", cfg}, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			for _, want := range tt.stderr {
				if !strings.Contains(errb.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, errb.String())
				}
			}
			if strings.Contains(out.String()+errb.String(), popPassword) {
				t.Fatal("a secret value was printed")
			}
		})
	}
	_ = dir
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := cli.Main(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "Usage") {
		t.Fatalf("no args: exit %d, %q", code, errb.String())
	}
	if code := cli.Main([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := cli.Main([]string{"example-config"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "mailboxes:") {
		t.Fatalf("example-config: exit %d", code)
	}
}

// servers starts Dovecot and smtp-sink and returns a config for them.
func servers(t *testing.T, extra string) (cfgPath string, dove *testenv.Dovecot, sink *testenv.SMTPSink) {
	t.Helper()
	dove = testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{"sales": popPassword}})
	sink = testenv.StartSMTPSink(t, testenv.SMTPSinkOptions{TLS: dove.CA})
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	os.WriteFile(passFile, []byte(popPassword+"\n"), 0o600)
	port := sink.Addr[strings.LastIndexByte(sink.Addr, ':')+1:]
	cfgPath = writeConfig(t, dir, fmt.Sprintf(`postmaster: postmaster@corp.example
poll_interval: 1s
delivery: {host: localhost, port: %s, tls: starttls, ca_file: %s}
archive: {dir: %s}
ledger: {path: %s}
log: {level: debug, format: json}
mailboxes:
  - {id: sales, server: "%s", tls: implicit, ca_file: %s, server_name: localhost, username: sales, password: "file:%s", deliver_to: [sales@corp.example]}
%s`, port, dove.CA.CertFile, filepath.Join(dir, "archive"), filepath.Join(dir, "ledger.db"), dove.TLSAddr, dove.CA.CertFile, passFile, extra))
	return cfgPath, dove, sink
}

func TestRunOnceAndStatus(t *testing.T) {
	cfg, dove, sink := servers(t, "")
	for i := 0; i < 3; i++ {
		dove.Deliver(t, "sales", []byte(fmt.Sprintf("From: a@example.org\r\nSubject: %d\r\nMessage-ID: <m%d@example.org>\r\n\r\nbody %d\r\n", i, i, i)))
	}
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"run", "--once", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("run --once: exit %d\n%s", code, errb.String())
	}
	logs := errb.String()
	if strings.Contains(logs, popPassword) {
		t.Fatal("the POP3 password appears in the logs")
	}
	// At debug level the POP3 and SMTP transcripts are logged, redacted.
	for _, want := range []string{"RETR", "MAIL FROM"} {
		if !strings.Contains(logs, want) {
			t.Errorf("debug logs lack the %s transcript line", want)
		}
	}
	// JSON logs name mailbox, UIDL, Message-ID and outcome.
	for _, want := range []string{`"mailbox":"sales"`, `"uidl":`, `"message_id":"m1@example.org"`, `"outcome":"accepted"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if n := len(sink.WaitFor(t, 3, 10*time.Second)); n != 3 || dove.Count(t, "sales") != 0 {
		t.Fatalf("sink %d, server %d", n, dove.Count(t, "sales"))
	}
	// The archive holds the three messages and no temporary file: the
	// files the archive made ahead are removed when the run ends.
	var eml, tmp []string
	filepath.WalkDir(filepath.Join(filepath.Dir(cfg), "archive"), func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil || d.IsDir():
		case strings.HasSuffix(p, ".eml"):
			eml = append(eml, p)
		default:
			tmp = append(tmp, p)
		}
		return nil
	})
	if len(eml) != 3 || len(tmp) != 0 {
		t.Fatalf("archive after run: %d .eml, other files %v", len(eml), tmp)
	}
	out.Reset()
	if code := cli.Main([]string{"status", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	if !strings.Contains(out.String(), "sales") || !strings.Contains(out.String(), "DELIVERED") {
		t.Fatalf("status output:\n%s", out.String())
	}
	fields := strings.Fields(strings.Split(out.String(), "\n")[1])
	if fields[0] != "sales" || fields[2] != "3" {
		t.Fatalf("status row %v, want 3 delivered", fields)
	}
}

// A dead POP3 server: exit 1 with a clear error, nothing changed.
func TestRunOnceUnreachableExitsOne(t *testing.T) {
	cfg, dove, _ := servers(t, "")
	dove.Stop(t)
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"run", "--once", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "poll failed") {
		t.Fatalf("no clear error:\n%s", errb.String())
	}
}

// The shipped binary loops at poll_interval and stops cleanly on SIGTERM.
func TestRunLoopStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "popconn")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/popconn").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cfg, dove, sink := servers(t, "")
	cmd := exec.Command(bin, "run", "--config", cfg)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Mail arriving while the loop runs is picked up by a later round.
	time.Sleep(1500 * time.Millisecond)
	dove.Deliver(t, "sales", []byte("From: a@example.org\r\nSubject: late\r\n\r\nlate\r\n"))
	sink.WaitFor(t, 1, 15*time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("popconn did not stop on SIGTERM\n%s", errb.String())
	}
	if !strings.Contains(errb.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", errb.String())
	}
}

// test-relay against a real MTA (smtp-sink behind STARTTLS): every step
// passes, exit 0.
func TestTestRelayPasses(t *testing.T) {
	cfg, _, sink := servers(t, "")
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"test-relay", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"route delivery: localhost:", "connect, EHLO: OK (TLS verified", "RCPT TO:<sales@corp.example>: OK", "relay test passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := len(sink.Messages(t)); n != 0 {
		t.Errorf("the relay test sent %d messages, want none", n)
	}
}

// test-relay against a receive connector that refuses to relay for one
// domain (seed 004's reply): exit 1, the cause and the fix printed.
func TestTestRelayExplainsUnableToRelay(t *testing.T) {
	srv := testenv.StartScriptedSMTP(t, testenv.SMTPScript{OnRcpt: func(to string) error {
		if strings.HasSuffix(to, "@contoso.example") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Unable to relay for " + to}
		}
		return nil
	}})
	port := srv.Addr[strings.LastIndexByte(srv.Addr, ':')+1:]
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`postmaster: postmaster@corp.example
delivery: {host: 127.0.0.1, port: %s, tls: none}
mailboxes:
  - {id: sales, server: pop.isp.example, username: sales, password: "env:CLI_TEST_UNUSED", deliver_to: [sales@corp.example]}
  - id: all
    server: pop.isp.example
    username: all
    password: "env:CLI_TEST_UNUSED"
    type: global
    global: {local_domains: [contoso.example]}
`, port))
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"test-relay", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"RCPT TO:<sales@corp.example>: OK",
		"RCPT TO:<postmaster@contoso.example>: FAILED: smtp rcpt: 550 5.7.1 Unable to relay for postmaster@contoso.example",
		"cause: Exchange will not accept mail for postmaster@contoso.example from this connector: contoso.example is not an accepted domain",
		"fix:   add contoso.example as an accepted domain (recipient policy), or grant this host relay permission on the receive connector",
		"relay test FAILED (1 problem(s))",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages sent, want none", n)
	}
}

// test-notify delivers the test message to the postmaster with the null
// sender through the route.
func TestTestNotify(t *testing.T) {
	cfg, _, sink := servers(t, "notify: {to: mailadmin@corp.example}\n")
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"test-notify", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "test notification to mailadmin@corp.example accepted by route delivery") {
		t.Errorf("output:\n%s", out.String())
	}
	got := sink.WaitFor(t, 1, 10*time.Second)
	if len(got) != 1 || got[0].From != "" || strings.Join(got[0].To, ",") != "mailadmin@corp.example" {
		t.Fatalf("relayed %+v, want one message from <> to mailadmin@corp.example", got)
	}
	e, err := gomessage.Read(bytes.NewReader(got[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if e.Header.Get("X-Popconn-Notice") != "test" || !strings.HasPrefix(e.Header.Get("Subject"), "popconnector test notification") {
		t.Errorf("header %v", e.Header)
	}
	body, _ := io.ReadAll(e.Body)
	if !strings.Contains(string(body), "notify on badmail: yes") {
		t.Errorf("body lacks the settings:\n%s", body)
	}
}
