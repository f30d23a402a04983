package reliability

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/popconnector/popconnector/internal/tlsmode"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/testenv"
)

// SecurityCases are scenario 7: no secret in any output, and no plaintext
// POP3 login without the opt-in.
func SecurityCases() []Case {
	return []Case{
		{"security/secrets-binary-debug", runSecretsBinary},
		{"security/secrets-transcripts", runSecretsTranscripts},
		{"security/secrets-echoed-by-servers", runSecretsEchoed},
		{"security/plaintext-login-refused", runPlaintextRefused},
	}
}

// secretForms are the ways a password can leak: as is, base64 (AUTH
// LOGIN), and inside an AUTH PLAIN token.
func secretForms(user, pass string) []string {
	return []string{
		pass,
		base64.StdEncoding.EncodeToString([]byte(pass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass)),
		base64.StdEncoding.EncodeToString([]byte(user + "\x00" + user + "\x00" + pass)),
	}
}

// leakSearch looks for every form of every secret in the named outputs
// and reports each hit.
type leakSearch struct {
	forms   []string
	checked int // outputs searched
}

func newLeakSearch(secrets map[string]string) *leakSearch {
	ls := &leakSearch{}
	for user, pass := range secrets {
		ls.forms = append(ls.forms, secretForms(user, pass)...)
	}
	return ls
}

func (ls *leakSearch) search(t T, what string, data []byte) {
	t.Helper()
	ls.checked++
	for _, f := range ls.forms {
		if bytes.Contains(data, []byte(f)) {
			t.Errorf("a secret (%d-byte form) appears in %s", len(f), what)
		}
	}
}

// searchDir searches every file under dir, except those named in skip
// (the password files themselves).
func (ls *leakSearch) searchDir(t T, dir string, skip ...string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		for _, s := range skip {
			if p == s {
				return nil
			}
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			return nil
		}
		ls.search(t, p, data)
		return nil
	})
}

// runSecretsBinary runs the shipped binary at debug level over POP3S and
// SMTP STARTTLS with AUTH, then with a wrong POP3 and a wrong SMTP
// password, and searches every output, the ledger file and the archive for
// the passwords.
func runSecretsBinary(t T, o *Options) Row {
	bin := PopconnBinary(t, o)
	const wrongPop, wrongSMTP = "Wrong-pop-S3cret-11aa", "Wrong-smtp-S3cret-22bb"
	r := NewRig(t, o, RigOptions{Dovecot: true})
	r.SMTP = testenv.StartScriptedSMTP(t, testenv.SMTPScript{TLS: r.Dovecot.CA, AuthUsers: map[string]string{smtpUser: smtpSecret}})
	r.SetSMTPAddr(r.SMTP.Addr)
	ids, msgs := SeqMessages(1, 5)
	r.SeedDovecot(ids, msgs)
	dir := t.TempDir()
	popFile := writeSecret(t, dir, "pop.pass", popPassword)
	smtpFile := writeSecret(t, dir, "smtp.pass", smtpSecret)
	wrongPopFile := writeSecret(t, dir, "wrong-pop.pass", wrongPop)
	wrongSMTPFile := writeSecret(t, dir, "wrong-smtp.pass", wrongSMTP)
	params := ConfigParams{
		Dir: dir, POPAddr: r.Dovecot.TLSAddr, POPTLS: "implicit", POPCAFile: r.Dovecot.CA.CertFile, POPPasswordFile: popFile,
		SMTPAddr: r.SMTP.Addr, SMTPTLS: "starttls", SMTPCAFile: r.Dovecot.CA.CertFile, SMTPPasswordFile: smtpFile,
		LogLevel: "debug",
	}
	ls := newLeakSearch(map[string]string{popUser: popPassword, smtpUser: smtpSecret, "wrong-pop": wrongPop, "wrong-smtp": wrongSMTP})
	var outputs []string
	run := func(p ConfigParams, args ...string) RunResult {
		cfg := WriteConfig(t, p)
		r.Runs++
		res := RunPopconn(t, bin, nil, append(args, "--config", cfg)...)
		outputs = append(outputs, res.Output)
		ls.search(t, "output of popconn "+strings.Join(args, " "), []byte(res.Output))
		return res
	}

	// Wrong passwords first: nothing may move, and the errors must not
	// carry them.
	bad := params
	bad.POPPasswordFile = wrongPopFile
	if res := run(bad, "run", "--once"); res.Code != 1 {
		t.Errorf("wrong POP3 password: exit %d, want 1", res.Code)
	}
	bad = params
	bad.SMTPPasswordFile = wrongSMTPFile
	if res := run(bad, "run", "--once"); res.Code != 0 && res.Code != 1 {
		t.Errorf("wrong SMTP password: exit %d", res.Code)
	}
	if n := len(r.SMTP.Messages()); n != 0 {
		t.Errorf("%d messages accepted with a wrong SMTP password", n)
	}
	if res := run(params, "check-config"); res.Code != 0 {
		t.Errorf("check-config: exit %d\n%s", res.Code, res.Output)
	}
	// Deferred by the wrong SMTP password: wait out the 1 s retry interval.
	deadline := time.Now().Add(30 * time.Second)
	for r.Dovecot.Count(t, popUser) > 0 && time.Now().Before(deadline) {
		time.Sleep(1100 * time.Millisecond)
		run(params, "run", "--once")
	}
	run(params, "status")
	debugLines := strings.Count(strings.Join(outputs, ""), `"level":"DEBUG"`)
	ls.searchDir(t, dir, popFile, smtpFile, wrongPopFile, wrongSMTPFile) // ledger.db, archive/, popconn.yaml
	for _, tx := range r.SMTP.Transactions() {
		if tx.AuthUser != smtpUser || !tx.TLS {
			t.Errorf("message accepted with AUTH user %q, TLS %v", tx.AuthUser, tx.TLS)
		}
	}
	p := &ProcRig{Rig: r, Bin: bin, Dir: dir}
	row := p.Row("security/secrets-binary-debug", 0, false)
	row.Notes = append(row.Notes, fmt.Sprintf("searched %d outputs and files for %d secret forms; the binary wrote %d debug line(s)", ls.checked, len(ls.forms), debugLines))
	if debugLines == 0 {
		row.Notes = append(row.Notes, "at log level debug the binary writes no POP3/SMTP transcript: app does not pass its logger to pop3.Options.Logger or relay.Options.Logger (secrets-transcripts covers the transcripts in-process)")
	}
	return row
}

// runSecretsTranscripts polls in-process with the POP3 and SMTP protocol
// transcripts on at debug level and searches them, the results, the
// ledger records and the archive.
func runSecretsTranscripts(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Dovecot: true})
	r.SMTP = testenv.StartScriptedSMTP(t, testenv.SMTPScript{TLS: r.Dovecot.CA, AuthUsers: map[string]string{smtpUser: smtpSecret}})
	r.SetSMTPAddr(r.SMTP.Addr)
	r.PopOpts.Logger = r.Logger
	r.RelayOpts = relay.Options{TLS: tlsmode.StartTLS, TLSConfig: &tls.Config{RootCAs: r.Dovecot.CA.Pool}, ServerName: "localhost",
		HeloDomain: "popconn.test", Timeout: 5 * time.Second, Logger: r.Logger,
		Auth: &relay.AuthConfig{Mechanism: "plain", Username: smtpUser}}
	r.RelayPass = secretFunc(smtpSecret)
	ids, msgs := SeqMessages(1, 5)
	r.SeedDovecot(ids, msgs)
	r.PollUntilDone(3)
	ls := newLeakSearch(map[string]string{popUser: popPassword, smtpUser: smtpSecret})
	logs := r.Logs.String()
	if !strings.Contains(logs, `"C: AUTH PLAIN ***"`) || !strings.Contains(logs, `"dir":"C","line":"AUTH PLAIN`) {
		t.Errorf("the transcripts do not show the POP3 and SMTP AUTH exchanges; the search covered nothing")
	}
	ls.search(t, "the debug transcripts", []byte(logs))
	for i, res := range r.Results {
		ls.search(t, fmt.Sprintf("result %d", i), []byte(fmt.Sprintf("%+v %v", res, res.Err)))
	}
	recs, _ := json.Marshal(ledgerRecords(t, r))
	ls.search(t, "the ledger records", recs)
	ls.searchDir(t, r.Dir)
	row := r.Row("security/secrets-transcripts", 0)
	row.Notes = append(row.Notes, fmt.Sprintf("searched %d outputs and files", ls.checked))
	return row
}

// runSecretsEchoed: servers that repeat the credentials in their error
// replies (some do, to "help"): the POP3 -ERR to PASS echoes the password,
// the SMTP 535 echoes the AUTH PLAIN token and the password.
func runSecretsEchoed(t T, o *Options) Row {
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	ids, msgs := SeqMessages(1, 3)
	var echo atomic.Bool
	echo.Store(true)
	r.ServePOP3(ids, msgs, func(s *pop3test.Session, cmd string) bool {
		if strings.HasPrefix(cmd, "PASS ") && echo.Load() {
			s.Send("-ERR [AUTH] wrong password " + strings.TrimPrefix(cmd, "PASS ") + " for " + popUser)
			return true
		}
		return false
	})
	ls := newLeakSearch(map[string]string{popUser: popPassword, smtpUser: smtpSecret})
	res := r.Poll()
	if !errors.Is(res.Err, pop3.ErrAuth) {
		t.Errorf("echoed POP3 rejection: err = %v, want pop3.ErrAuth", res.Err)
	}
	ls.search(t, "the POP3 login error", []byte(errString(res.Err)))
	echo.Store(false)

	raw := StartRawSMTP(t, func(c *SMTPConn) {
		c.Reply("220 raw.test ESMTP")
		c.Converse(func(cmd string) bool {
			up := strings.ToUpper(cmd)
			switch {
			case strings.HasPrefix(up, "EHLO"):
				c.Reply("250-raw.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")
			case strings.HasPrefix(up, "AUTH"):
				tok := strings.TrimSpace(cmd[len("AUTH PLAIN"):])
				dec, _ := base64.StdEncoding.DecodeString(tok)
				c.Reply("535 5.7.8 Authentication credentials invalid: " + tok + " = " + strings.ReplaceAll(string(dec), "\x00", " "))
			default:
				return false
			}
			return true
		})
	})
	r.SetSMTPAddr(raw.Addr)
	r.RelayOpts.AllowPlaintextAuth = true
	r.RelayOpts.Auth = &relay.AuthConfig{Mechanism: "plain", Username: smtpUser}
	r.RelayOpts.Logger = r.Logger
	r.RelayPass = secretFunc(smtpSecret)
	res = r.Poll()
	if res.Deferred+res.Rejected != 3 {
		t.Errorf("echoed SMTP rejection: deferred %d rejected %d, want all 3 undelivered", res.Deferred, res.Rejected)
	}
	sawAuth := false
	for _, l := range raw.Lines() {
		sawAuth = sawAuth || strings.HasPrefix(strings.ToUpper(l), "AUTH")
	}
	if !sawAuth {
		t.Errorf("the relay never sent AUTH; the case tested nothing")
	}
	ls.search(t, "the SMTP poll error", []byte(errString(res.Err)))
	for _, rec := range ledgerRecords(t, r) {
		ls.search(t, "ledger record "+rec.UIDL, []byte(fmt.Sprintf("%+v", *rec)))
	}
	ls.search(t, "the connector log", []byte(r.Logs.String()))
	row := r.Row("security/secrets-echoed-by-servers", 0)
	row.Notes = append(row.Notes, "ledger reason: "+firstRecordError(t, r))
	return row
}

// runPlaintextRefused: with tls none and no opt-in, the configuration is
// refused, and the client sends no credentials to a plaintext server.
func runPlaintextRefused(t T, o *Options) Row {
	bin := PopconnBinary(t, o)
	r := NewRig(t, o, RigOptions{Script: &testenv.SMTPScript{}})
	var mu sync.Mutex
	var seen []string
	ids, msgs := SeqMessages(1, 2)
	r.ServePOP3(ids, msgs, func(s *pop3test.Session, cmd string) bool {
		mu.Lock()
		seen = append(seen, cmd)
		mu.Unlock()
		return false
	})
	dir := t.TempDir()
	cfg := WriteConfig(t, ConfigParams{Dir: dir, POPAddr: r.Boxes[0].srv.Addr, POPTLS: "none",
		POPPasswordFile: writeSecret(t, dir, "pop.pass", popPassword), SMTPAddr: r.SMTP.Addr})
	r.Runs++
	res := RunPopconn(t, bin, nil, "run", "--once", "--config", cfg)
	if res.Code != 2 || !strings.Contains(res.Output, "allow_plaintext_login") {
		t.Errorf("tls: none without allow_plaintext_login: exit %d, want 2 naming allow_plaintext_login; output:\n%s", res.Code, tail(res.Output, 5))
	}
	note := "config: " + lastLine(res.Output)
	// In-process, with the option off: refused before USER/PASS.
	r.PopOpts.AllowPlaintextAuth = false
	pres := r.Poll()
	if !errors.Is(pres.Err, pop3.ErrPlaintextRefused) {
		t.Errorf("plaintext login without opt-in: err = %v, want pop3.ErrPlaintextRefused", pres.Err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range seen {
		up := strings.ToUpper(c)
		if strings.HasPrefix(up, "USER") || strings.HasPrefix(up, "PASS") || strings.HasPrefix(up, "AUTH") || strings.HasPrefix(up, "APOP") {
			t.Errorf("credentials command sent over plaintext: %q", strings.SplitN(c, " ", 2)[0])
		}
	}
	// Against a real Dovecot that offers STLS on its plain port, "none"
	// still refuses.
	dove := testenv.StartDovecot(t, testenv.DovecotOptions{Users: map[string]string{popUser: popPassword}})
	dial := app.DialPOP3(pop3.Options{Addr: dove.Addr, TLS: tlsmode.None, Timeout: 5 * time.Second}, popUser,
		func(context.Context) (string, error) { return popPassword, nil })
	if _, err := dial(context.Background()); !errors.Is(err, pop3.ErrPlaintextRefused) {
		t.Errorf("Dovecot plain port, tls none: err = %v, want pop3.ErrPlaintextRefused", err)
	}
	r.Refusal = pres.Err
	row := r.Row("security/plaintext-login-refused", 0)
	row.Notes = append(row.Notes, note, "in-process: "+errString(pres.Err))
	return row
}
