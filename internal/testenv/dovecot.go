package testenv

import (
	"bufio"
	"bytes"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/template"
	"time"
)

//go:embed templates/dovecot.conf.tmpl
var dovecotConfTemplate string

var dovecotTmpl = template.Must(template.New("dovecot.conf").Parse(dovecotConfTemplate))

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	// Users maps user name to password (stored as {PLAIN} in a passwd-file).
	// Names and passwords must not contain ':', '/', NUL or line breaks.
	Users map[string]string
	// ExtraConf is appended to the generated dovecot.conf; a setting given
	// here overrides the generated one (later assignments win in Dovecot).
	ExtraConf string
	// MailboxCert is the CA that signs the server certificate; nil makes a
	// new one (available as Dovecot.CA either way).
	MailboxCert *CA
	// APOP offers APOP (RFC 1939 §7): auth_mechanisms gains apop, so the
	// greeting carries a <timestamp>. The {PLAIN} passwd-file makes the
	// shared secret available to Dovecot.
	APOP bool
	// OAuth2, if set, offers SASL XOAUTH2 and OAUTHBEARER with an oauth2
	// passdb that checks tokens at this endpoint (tokeninfo_url, then
	// introspection_mode = post with force_introspection, username_attribute
	// username, active_attribute active), over HTTPS verified with the
	// endpoint's CA. The token's user must also be in Users (the userdb).
	OAuth2 *OAuthServer
}

// Dovecot is a running private Dovecot POP3 server.
//
// Facts tests rely on:
//   - Addr is plain POP3 (RFC 1939) offering STLS (RFC 2595); USER/PASS and
//     AUTH PLAIN/LOGIN are allowed before TLS (disable_plaintext_auth=no).
//     TLSAddr is implicit-TLS POP3 (pop3s). Both verify with CA for
//     "localhost" and "127.0.0.1".
//   - UIDL is the maildir base file name (pop3_uidl_format = %g): the name
//     Deliver returns, e.g. "1763811742.M000123P0004242Q00000001.testenv".
//   - Dovecot serves every stored line ending with CRLF: a message stored
//     with LF line ends is sent with CRLF; CRLF-stored messages are sent
//     byte for byte; a missing final line break gets CRLF added before the
//     terminating ".". LIST/STAT sizes count CRLF line ends.
//   - Several sessions may open the same mailbox at once
//     (pop3_lock_session = no, the Dovecot default).
type Dovecot struct {
	Addr    string // 127.0.0.1:port, plain POP3 with STLS offered
	TLSAddr string // 127.0.0.1:port, implicit TLS (pop3s)
	CA      *CA    // signed the server certificate (localhost, 127.0.0.1)
	Dir     string // configuration, logs (dovecot.log), home/<user>/Maildir
	PID     int    // dovecot master process

	proc    *proc
	users   map[string]bool
	mailUID int
	mailGID int
}

// dovecotConf holds the values rendered into templates/dovecot.conf.tmpl.
type dovecotConf struct {
	Dir, InstanceName       string
	LoginUser, InternalUser string
	InternalGroup           string // only set when not root
	NonRoot                 bool
	MailUID, MailGID        int
	CertFile, KeyFile       string
	Port, TLSPort           int
	APOP, OAuth2            bool
	OAuth2Conf              string
}

// StartDovecot starts a private Dovecot (`dovecot -F -c CONF`, own base_dir,
// passwd-file users, one maildir per user) on free loopback ports, waits
// until both ports answer (the TLS port with a handshake verified against
// the CA), and registers a t.Cleanup that stops it by PID and waits. It
// skips or fails through NeedBinary when dovecot is not installed.
func StartDovecot(t T, opts DovecotOptions) *Dovecot {
	t.Helper()
	bin := NeedBinary(t, "dovecot")
	for name, pass := range opts.Users {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, ":/\x00\r\n\t ") {
			t.Fatalf("testenv: unusable Dovecot user name %q", name)
		}
		if strings.ContainsAny(pass, ":\x00\r\n") {
			t.Fatalf("testenv: password of Dovecot user %q contains ':', NUL or a line break", name)
		}
	}

	ca := opts.MailboxCert
	if ca == nil {
		ca = NewCA(t)
	}
	certFile, keyFile, _ := ca.Issue(t, "localhost", "127.0.0.1")
	dir := serverDir(t, "dovecot")

	conf := dovecotConf{
		Dir:          dir,
		InstanceName: "popconn-" + filepath.Base(dir),
		CertFile:     certFile,
		KeyFile:      keyFile,
	}
	if os.Geteuid() == 0 {
		conf.MailUID, conf.MailGID = unprivilegedIDs()
		conf.LoginUser, conf.InternalUser = "dovenull", "dovecot"
		for _, u := range []string{conf.LoginUser, conf.InternalUser} {
			if !userExists(u) {
				t.Fatalf("testenv: system user %q missing; the dovecot-core package creates it (infra/install-deps.sh)", u)
			}
		}
	} else {
		cur, err := user.Current()
		if err != nil {
			t.Fatalf("testenv: current user: %v", err)
		}
		conf.MailUID, conf.MailGID = os.Getuid(), os.Getgid()
		conf.LoginUser, conf.InternalUser = cur.Username, cur.Username
		grp, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
		if err != nil {
			t.Fatalf("testenv: current group: %v", err)
		}
		conf.InternalGroup = grp.Name
		conf.NonRoot = true
	}

	conf.APOP = opts.APOP
	if opts.OAuth2 != nil {
		conf.OAuth2 = true
		conf.OAuth2Conf = writeDovecotOAuth2Conf(t, dir, opts.OAuth2)
	}

	d := &Dovecot{CA: ca, Dir: dir, users: map[string]bool{}, mailUID: conf.MailUID, mailGID: conf.MailGID}
	// Mail processes run as the mail uid and must traverse home/.
	if err := os.Mkdir(filepath.Join(dir, "home"), 0o755); err != nil {
		t.Fatalf("testenv: create home dir: %v", err)
	}
	var users strings.Builder
	names := make([]string, 0, len(opts.Users))
	for name := range opts.Users {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		home := filepath.Join(dir, "home", name)
		fmt.Fprintf(&users, "%s:{PLAIN}%s:%d:%d::%s::\n", name, opts.Users[name], conf.MailUID, conf.MailGID, home)
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(home, "Maildir", sub), 0o700); err != nil {
				t.Fatalf("testenv: create maildir: %v", err)
			}
		}
		if err := chownTree(home, conf.MailUID, conf.MailGID); err != nil {
			t.Fatalf("testenv: chown maildir: %v", err)
		}
		d.users[name] = true
	}
	// The auth process runs as the internal user and reads this file.
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users.String()), 0o644); err != nil {
		t.Fatalf("testenv: write users file: %v", err)
	}

	confFile := filepath.Join(dir, "dovecot.conf")
	logFile := filepath.Join(dir, "dovecot.log")
	outFile := filepath.Join(dir, "dovecot.stderr")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		var err error
		if conf.Port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if conf.TLSPort, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if conf.TLSPort == conf.Port {
			continue
		}
		var b bytes.Buffer
		if err := dovecotTmpl.Execute(&b, conf); err != nil {
			t.Fatalf("testenv: render dovecot.conf: %v", err)
		}
		if opts.ExtraConf != "" {
			b.WriteString("\n# ExtraConf from the test\n")
			b.WriteString(opts.ExtraConf)
			b.WriteString("\n")
		}
		if err := os.WriteFile(confFile, b.Bytes(), 0o644); err != nil {
			t.Fatalf("testenv: write dovecot.conf: %v", err)
		}
		os.Remove(logFile)
		os.Remove(outFile)

		p, err := startProc("dovecot", bin, []string{"-F", "-c", confFile}, outFile, syscall.SIGTERM)
		if err != nil {
			t.Fatal(err)
		}
		d.proc, d.PID = p, p.pid()
		d.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(conf.Port))
		d.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(conf.TLSPort))

		lastErr = waitGreeting(d.Addr, "+OK", p, 20*time.Second)
		if lastErr == nil {
			lastErr = d.checkTLS(p, 10*time.Second)
		}
		if lastErr == nil {
			t.Cleanup(func() { d.Stop(t) })
			return d
		}
		if bindRace(t, "dovecot", attempt, p, logFile, outFile) {
			continue
		}
		break
	}
	t.Fatalf("testenv: dovecot did not start: %v (config %s)%s", lastErr, confFile, logTail(30, outFile, logFile))
	return nil
}

// writeDovecotOAuth2Conf writes the oauth2 passdb's settings file (Dovecot
// 2.3 dovecot-oauth2.conf.ext) and a copy of the endpoint's CA that the auth
// process, running as an unprivileged user, can read.
func writeDovecotOAuth2Conf(t T, dir string, srv *OAuthServer) string {
	t.Helper()
	caFile := filepath.Join(dir, "oauth2-ca.pem")
	if err := os.WriteFile(caFile, srv.CA.CertPEM, 0o644); err != nil {
		t.Fatalf("testenv: write oauth2 CA: %v", err)
	}
	conf := strings.Join([]string{
		// tokeninfo answers 401 for a bad token, which Dovecot reports as
		// a credentials failure; introspection (RFC 7662, POST) then
		// supplies the user name and the active flag.
		"tokeninfo_url = " + srv.TokenInfoURL,
		"introspection_url = " + srv.IntrospectURL,
		"introspection_mode = post",
		"force_introspection = yes",
		"username_attribute = username",
		"username_format = %u",
		"active_attribute = active",
		"active_value = true",
		"tls_ca_cert_file = " + caFile,
		"timeout_msecs = 10000",
		"",
	}, "\n")
	path := filepath.Join(dir, "dovecot-oauth2.conf.ext")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatalf("testenv: write oauth2 conf: %v", err)
	}
	return path
}

// checkTLS verifies that the pop3s port completes a handshake with the
// issued certificate and greets.
func (d *Dovecot) checkTLS(p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errProcExited
		}
		err = func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", d.TLSAddr, d.CA.ClientConfig("localhost"))
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, "+OK") {
				return fmt.Errorf("unexpected pop3s greeting %q", line)
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testenv: pop3s %s not ready: %w", d.TLSAddr, err)
}

// Stop stops Dovecot now (SIGTERM to the master, SIGKILL to its process
// group after 10s) and waits for it to exit. It is idempotent and also runs
// from t.Cleanup.
func (d *Dovecot) Stop(t T) {
	t.Helper()
	if d.proc == nil {
		return
	}
	if err := d.proc.stop(10 * time.Second); err != nil {
		t.Errorf("%v%s", err, logTail(20, filepath.Join(d.Dir, "dovecot.log")))
	}
}

// LogTail returns the last n lines of Dovecot's log, for test failure
// messages.
func (d *Dovecot) LogTail(n int) string {
	return logTail(n, filepath.Join(d.Dir, "dovecot.stderr"), filepath.Join(d.Dir, "dovecot.log"))
}

// Maildir returns the path of user's maildir.
func (d *Dovecot) Maildir(user string) string {
	return filepath.Join(d.Dir, "home", user, "Maildir")
}

var deliverSeq atomic.Int64

// Deliver puts one message into user's maildir (new/) and returns its file
// name, which is also the message's POP3 UIDL. The bytes are stored exactly
// as given (LF or CRLF), written to tmp/, synced and renamed into new/, so a
// running Dovecot sees either nothing or the whole message.
func (d *Dovecot) Deliver(t T, user string, msg []byte) string {
	t.Helper()
	if !d.users[user] {
		t.Fatalf("testenv: Deliver to unknown Dovecot user %q", user)
	}
	now := time.Now()
	name := fmt.Sprintf("%010d.M%06dP%07dQ%08d.testenv", now.Unix(), now.Nanosecond()/1000, os.Getpid(), deliverSeq.Add(1))
	md := d.Maildir(user)
	tmp := filepath.Join(md, "tmp", name)
	if err := writeSynced(tmp, msg, d.mailUID, d.mailGID); err != nil {
		t.Fatalf("testenv: deliver: %v", err)
	}
	if err := os.Rename(tmp, filepath.Join(md, "new", name)); err != nil {
		t.Fatalf("testenv: deliver: %v", err)
	}
	return name
}

func writeSynced(path string, data []byte, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && os.Geteuid() == 0 {
		err = os.Chown(path, uid, gid)
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// MailFile is one message file in a maildir.
type MailFile struct {
	Name string // base name without the ":2,FLAGS" suffix: the UIDL
	Path string
	Dir  string // "new" or "cur"
	Data []byte // raw bytes as stored
}

// Files lists the messages currently in user's maildir (new and cur),
// sorted by name, which for Deliver'd messages is delivery order.
func (d *Dovecot) Files(t T, user string) []MailFile {
	t.Helper()
	md := d.Maildir(user)
	// Dovecot may rename new/x to cur/x:2,S or unlink a file between our
	// directory read and our file read; rescan when that happens.
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		files, err := scanMaildir(md)
		if err == nil {
			return files
		}
		lastErr = err
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("testenv: read maildir of %q: %v", user, lastErr)
	return nil
}

func scanMaildir(md string) ([]MailFile, error) {
	var files []MailFile
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			path := filepath.Join(md, sub, e.Name())
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			base, _, _ := strings.Cut(e.Name(), ":")
			files = append(files, MailFile{Name: base, Path: path, Dir: sub, Data: data})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// Messages returns the messages currently in user's maildir (new+cur), raw
// as stored (not as served: see Dovecot for the CRLF rule), in name order.
func (d *Dovecot) Messages(t T, user string) [][]byte {
	t.Helper()
	files := d.Files(t, user)
	out := make([][]byte, len(files))
	for i, f := range files {
		out[i] = f.Data
	}
	return out
}

// Count returns how many messages are in user's maildir (new+cur).
func (d *Dovecot) Count(t T, user string) int {
	t.Helper()
	return len(d.Files(t, user))
}

// chownTree gives root's freshly created tree to the mail user.
func chownTree(root string, uid, gid int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}
