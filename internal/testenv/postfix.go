package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PostfixOptions configures StartPostfix: a private Postfix standing in for
// an Exchange receive connector that accepts mail for some domains only.
type PostfixOptions struct {
	// Hostname is myhostname: the greeting and the EHLO reply name.
	// Default "exchange.corp.example".
	Hostname string
	// Recipients are the known addresses. Each gets a Maildir (see
	// Postfix.Maildir). Another address in an accepted domain is refused
	// with "550 5.1.1 <addr>: Recipient address rejected: User unknown in
	// virtual mailbox table".
	Recipients []string
	// Domains are the accepted domains besides those of Recipients. Any
	// other domain is refused with "554 5.7.1 <addr>: Relay access denied"
	// (the client is never in mynetworks).
	Domains []string
	// MessageSizeLimit is message_size_limit in bytes: advertised as SIZE
	// (RFC 1870), enforced at MAIL ("552 5.3.4 Message size exceeds fixed
	// limit" for a larger SIZE=) and at the end of DATA ("552 5.3.4 Error:
	// message file too big"). 0 = Postfix's default (10240000).
	MessageSizeLimit int64
	// TLS, when set, offers STARTTLS (RFC 3207) with a certificate from
	// this CA for "localhost" and 127.0.0.1.
	TLS *CA
	// Listeners are more smtpd ports of the same instance (same domains,
	// recipients and Maildirs) with their own settings; see
	// Postfix.ListenerAddr.
	Listeners []PostfixListener
}

// PostfixListener is one more smtpd port of a Postfix instance: a
// master.cf service with "-o" overrides of main.cf.
type PostfixListener struct {
	Name string // how Postfix.ListenerAddr finds it
	// RequireTLS refuses MAIL before STARTTLS ("530 5.7.0 Must issue a
	// STARTTLS command first": smtpd_tls_security_level = encrypt). Needs
	// PostfixOptions.TLS.
	RequireTLS bool
	// CertHosts, with PostfixOptions.TLS, gives this port its own
	// certificate for these names (e.g. another host, to stage a name
	// mismatch).
	CertHosts []string
	// MessageSizeLimit overrides message_size_limit for this port's smtpd
	// (0 = the instance's).
	MessageSizeLimit int64
	// RejectSubject, when set, is a content filter on this port: a message
	// whose Subject matches this POSIX regular expression is refused at
	// the end of DATA with "550 5.7.1 Message rejected as spam by Content
	// Filtering" (header_checks in a cleanup service of its own).
	RejectSubject string
	// HideSize drops SIZE from the EHLO reply (smtpd_discard_ehlo_keywords):
	// a client then learns of the limit only from the 552 reply to the
	// final "." of DATA.
	HideSize bool
	// RecipientLimit is smtpd_recipient_limit for this port (0 = Postfix's
	// 1000): the most recipients accepted in one transaction; each RCPT
	// past it is answered "452 4.5.3 Error: too many recipients", as
	// Exchange's MaxRecipientsPerMessage does.
	RecipientLimit int
}

// Postfix is a running private Postfix instance (master(8) and its
// children). Mail for Recipients is delivered by the virtual(8) agent into
// one Maildir per recipient under Dir/mail.
//
// Facts tests rely on:
//   - It never delivers outside the test: default_transport and
//     relay_transport are error(8), mydestination is empty, no relayhost,
//     notify_classes is empty (no postmaster copies, undeliverable bounces
//     are discarded), no DNS lookup (smtpd_peername_lookup = no and no
//     smtp(8) client in master.cf).
//   - smtpd_error_sleep_time is 0, so refusals come at once.
//   - The virtual agent writes each message with "Return-Path:",
//     "X-Original-To:" and "Delivered-To:" first, then Postfix's
//     "Received:" field, then the message as received (cleanup(8) adds a
//     missing Date:, From: or Message-ID:), with LF line ends.
type Postfix struct {
	Addr     string // 127.0.0.1:port of the main smtpd
	Hostname string // myhostname
	CA       *CA    // the TLS CA, or nil
	Dir      string // config/, queue/, data/, mail/, postfix.log
	PID      int    // the master process

	listeners map[string]string
	proc      *proc
	queueDir  string
	mailDir   string
}

// postfixDaemonDir holds master(8) and the daemons it runs (Debian).
const postfixDaemonDir = "/usr/lib/postfix/sbin"

// NeedPostfix checks what StartPostfix needs — the postfix command, the
// master daemon, the postfix user and postdrop group, and root (the master
// runs as root and its children drop to the postfix user) — and skips the
// test with the reason when something is missing, or fails it when
// Required(). It returns the path of the postfix command.
func NeedPostfix(t T) string {
	t.Helper()
	bin := NeedBinary(t, "postfix")
	NeedBinary(t, postfixDaemonDir+"/master", postfixDaemonDir+"/master")
	problem := ""
	switch {
	case os.Geteuid() != 0:
		problem = "the Postfix stand-in needs root (its master daemon runs as root and drops to the postfix user)"
	case !userExists("postfix"):
		problem = "system user postfix missing; the postfix package creates it (infra/install-deps.sh)"
	case !groupExists("postdrop"):
		problem = "system group postdrop missing; the postfix package creates it (infra/install-deps.sh)"
	}
	if problem != "" {
		if Required() {
			t.Fatalf("%s; integration servers are required (CI=true or POPCONN_INTEGRATION=1)", problem)
		}
		t.Skip(problem)
	}
	return bin
}

// validMailAddr is the address syntax accepted in PostfixOptions: plain
// dot-atoms, enough for test addresses, and safe inside the map file.
var validMailAddr = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_{|}~.-]+@[A-Za-z0-9.-]+$`)

// StartPostfix writes a configuration under a new server directory (never
// touching /etc/postfix or the system queue), creates the queue with
// `postfix -c DIR check`, runs `master -c DIR -d` in the foreground in its
// own process group, waits until every smtpd port answers 220, and
// registers a t.Cleanup that stops it by PID (SIGTERM: the master ends its
// children) and waits. It skips or fails through NeedPostfix.
func StartPostfix(t T, opts PostfixOptions) *Postfix {
	t.Helper()
	bin := NeedPostfix(t)
	if opts.Hostname == "" {
		opts.Hostname = "exchange.corp.example"
	}
	domains := map[string]bool{}
	var domainList []string
	addDomain := func(d string) {
		d = strings.ToLower(d)
		if !domains[d] {
			domains[d] = true
			domainList = append(domainList, d)
		}
	}
	var maps strings.Builder
	for _, a := range opts.Recipients {
		if !validMailAddr.MatchString(a) {
			t.Fatalf("testenv: unusable Postfix recipient %q", a)
		}
		a = strings.ToLower(a)
		addDomain(a[strings.LastIndexByte(a, '@')+1:])
		// A value ending in "/" makes virtual(8) deliver to a Maildir.
		fmt.Fprintf(&maps, "%s %s/\n", a, a)
	}
	for _, d := range opts.Domains {
		if !validMailAddr.MatchString("x@" + d) {
			t.Fatalf("testenv: unusable Postfix domain %q", d)
		}
		addDomain(d)
	}
	if len(domainList) == 0 {
		t.Fatalf("testenv: StartPostfix needs at least one recipient or domain")
	}
	for _, l := range opts.Listeners {
		if l.Name == "" {
			t.Fatalf("testenv: Postfix listener without a name")
		}
		if (l.RequireTLS || len(l.CertHosts) > 0) && opts.TLS == nil {
			t.Fatalf("testenv: Postfix listener %q needs PostfixOptions.TLS", l.Name)
		}
	}

	dir := serverDir(t, "postfix")
	pf := &Postfix{Hostname: opts.Hostname, CA: opts.TLS, Dir: dir, listeners: map[string]string{},
		queueDir: filepath.Join(dir, "queue"), mailDir: filepath.Join(dir, "mail")}
	confDir := filepath.Join(dir, "config")
	dataDir := filepath.Join(dir, "data")
	uid, gid := unprivilegedIDs()
	pfUID, pfGID, err := lookupUser("postfix")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, d := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
	}{
		{confDir, 0o755, 0, 0},
		{pf.queueDir, 0o755, 0, 0},
		{dataDir, 0o700, pfUID, pfGID},
		{pf.mailDir, 0o755, uid, gid},
	} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	mapFile := filepath.Join(confDir, "recipients")
	if err := os.WriteFile(mapFile, []byte(maps.String()), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	main := [][2]string{
		{"compatibility_level", "3.6"},
		{"queue_directory", pf.queueDir},
		{"data_directory", dataDir},
		{"mail_owner", "postfix"},
		{"setgid_group", "postdrop"},
		{"myhostname", opts.Hostname},
		{"myorigin", "$myhostname"},
		{"mydestination", ""},
		{"local_recipient_maps", ""},
		{"alias_maps", ""},
		{"alias_database", ""},
		{"inet_interfaces", "127.0.0.1"},
		{"inet_protocols", "ipv4"},
		// Nobody is in mynetworks: relaying needs an accepted domain.
		{"mynetworks", ""},
		{"relayhost", ""},
		{"relay_domains", ""},
		{"smtpd_relay_restrictions", "reject_unauth_destination"},
		{"smtpd_recipient_restrictions", ""},
		{"virtual_mailbox_domains", strings.Join(domainList, ", ")},
		{"virtual_mailbox_maps", "texthash:" + mapFile},
		{"virtual_mailbox_base", pf.mailDir},
		{"virtual_uid_maps", "static:" + strconv.Itoa(uid)},
		{"virtual_gid_maps", "static:" + strconv.Itoa(gid)},
		{"virtual_minimum_uid", "1"},
		{"virtual_mailbox_limit", "0"},
		// Nothing leaves: what is not for a virtual mailbox fails here.
		{"default_transport", "error:5.7.1 testenv: delivery outside the test is disabled"},
		{"relay_transport", "error:5.7.1 testenv: delivery outside the test is disabled"},
		{"notify_classes", ""},
		{"smtpd_peername_lookup", "no"},
		{"smtp_dns_support_level", "disabled"},
		{"smtpd_error_sleep_time", "0"},
		{"in_flow_delay", "0"},
		{"biff", "no"},
		{"smtpd_banner", "$myhostname ESMTP Postfix (testenv)"},
		{"maillog_file", filepath.Join(dir, "postfix.log")},
		{"maillog_file_prefixes", dir},
	}
	if opts.MessageSizeLimit > 0 {
		main = append(main, [2]string{"message_size_limit", strconv.FormatInt(opts.MessageSizeLimit, 10)})
	}
	if opts.TLS != nil {
		certFile, keyFile, _ := opts.TLS.Issue(t, "localhost", "127.0.0.1")
		main = append(main, [2]string{"smtpd_tls_chain_files", keyFile + ", " + certFile},
			[2]string{"smtpd_tls_security_level", "may"})
	}
	var mainCf strings.Builder
	mainCf.WriteString("# Written by popconnector's testenv.StartPostfix for one test.\n")
	for _, kv := range main {
		fmt.Fprintf(&mainCf, "%s = %s\n", kv[0], kv[1])
	}
	if err := os.WriteFile(filepath.Join(confDir, "main.cf"), []byte(mainCf.String()), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Per-listener overrides, rendered as master.cf "-o" options.
	overrides := make([][]string, len(opts.Listeners))
	var services []string // extra master.cf services the overrides name
	for i, l := range opts.Listeners {
		var o []string
		if l.RejectSubject != "" {
			checks := filepath.Join(confDir, fmt.Sprintf("header_checks.%d", i))
			rule := fmt.Sprintf("/^Subject:.*%s/ REJECT Message rejected as spam by Content Filtering\n", l.RejectSubject)
			if err := os.WriteFile(checks, []byte(rule), 0o644); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			name := fmt.Sprintf("cleanup-%d", i)
			services = append(services, name+" unix n - n - 0 cleanup\n  -o header_checks=regexp:"+checks)
			o = append(o, "cleanup_service_name="+name)
		}
		if l.RequireTLS {
			o = append(o, "smtpd_tls_security_level=encrypt")
		}
		if len(l.CertHosts) > 0 {
			certFile, keyFile, _ := opts.TLS.Issue(t, l.CertHosts...)
			o = append(o, "smtpd_tls_chain_files="+keyFile+","+certFile)
		}
		if l.MessageSizeLimit > 0 {
			o = append(o, "message_size_limit="+strconv.FormatInt(l.MessageSizeLimit, 10))
		}
		if l.HideSize {
			o = append(o, "smtpd_discard_ehlo_keywords=size")
		}
		if l.RecipientLimit > 0 {
			o = append(o, "smtpd_recipient_limit="+strconv.Itoa(l.RecipientLimit))
		}
		overrides[i] = o
	}

	logFile := filepath.Join(dir, "postfix.log")
	outFile := filepath.Join(dir, "master.out")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(1 + len(opts.Listeners))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(confDir, "master.cf"), []byte(postfixMasterCf(ports, overrides, services)), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if attempt == 0 {
			// Creates the queue directories (post-install create-missing)
			// and checks the configuration; only under Dir.
			cmd := exec.Command(bin, "-c", confDir, "check")
			cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("testenv: postfix check: %v\n%s%s", err, out, logTail(20, logFile))
			}
		}
		os.Remove(logFile)
		os.Remove(outFile)
		p, err := startProc("postfix master", postfixDaemonDir+"/master", []string{"-c", confDir, "-d"}, outFile, syscall.SIGTERM)
		if err != nil {
			t.Fatal(err)
		}
		addrs := make([]string, len(ports))
		lastErr = nil
		for i, port := range ports {
			addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if lastErr = waitGreeting(addrs[i], "220 ", p, 20*time.Second); lastErr != nil {
				break
			}
		}
		if lastErr == nil {
			pf.proc, pf.PID = p, p.pid()
			pf.Addr = addrs[0]
			for i, l := range opts.Listeners {
				pf.listeners[l.Name] = addrs[i+1]
			}
			t.Cleanup(func() { pf.Stop(t) })
			return pf
		}
		if bindRace(t, "postfix", attempt, p, logFile, outFile) {
			continue
		}
		break
	}
	t.Fatalf("testenv: postfix did not start: %v (config %s)%s", lastErr, confDir, logTail(30, outFile, logFile))
	return nil
}

// postfixMasterCf is the services the instance needs, none chrooted; the
// first port is the main smtpd, the others carry their overrides; extra
// are more services (lines) the overrides name.
func postfixMasterCf(ports []int, overrides [][]string, extra []string) string {
	var b strings.Builder
	b.WriteString("# service type  private unpriv chroot wakeup maxproc command\n")
	for i, port := range ports {
		fmt.Fprintf(&b, "127.0.0.1:%d inet n - n - - smtpd\n", port)
		if i > 0 {
			for _, o := range overrides[i-1] {
				fmt.Fprintf(&b, "  -o %s\n", o)
			}
		}
	}
	b.WriteString(`cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`)
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	return b.String()
}

// freePorts returns n distinct ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// ListenerAddr returns the address of the named PostfixListener; it fails
// the test for an unknown name.
func (pf *Postfix) ListenerAddr(t T, name string) string {
	t.Helper()
	a, ok := pf.listeners[name]
	if !ok {
		t.Fatalf("testenv: Postfix has no listener %q", name)
	}
	return a
}

// Stop stops Postfix now (SIGTERM to the master, which ends its children;
// SIGKILL to the process group after 10s) and waits. Idempotent; also runs
// from t.Cleanup. Maildirs stay readable.
func (pf *Postfix) Stop(t T) {
	t.Helper()
	if pf.proc == nil {
		return
	}
	if err := pf.proc.stop(10 * time.Second); err != nil {
		t.Errorf("%v%s", err, pf.LogTail(20))
	}
}

// LogTail returns the last n lines of Postfix's log, for failure messages.
func (pf *Postfix) LogTail(n int) string {
	return logTail(n, filepath.Join(pf.Dir, "master.out"), filepath.Join(pf.Dir, "postfix.log"))
}

// Maildir returns the Maildir of a known recipient.
func (pf *Postfix) Maildir(rcpt string) string {
	return filepath.Join(pf.mailDir, strings.ToLower(rcpt))
}

// Delivered is one message the virtual agent stored in a Maildir.
type Delivered struct {
	Recipient  string // the Maildir's owner
	ReturnPath string // the envelope sender from "Return-Path:", "" for <>
	File       string
	// Data is the file as stored: "Return-Path:", "X-Original-To:",
	// "Delivered-To:" and Postfix's "Received:" field, then the message,
	// with LF line ends.
	Data []byte
}

// Idle waits until the queue holds no message: every message Postfix
// accepted (answered 250 to DATA) has then been delivered or bounced. It
// fails the test after timeout, or when a message sits in the deferred
// queue (a delivery failure inside the stand-in).
func (pf *Postfix) Idle(t T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, deferred, err := pf.queued()
		if err != nil {
			t.Fatalf("testenv: postfix queue: %v", err)
		}
		if deferred > 0 {
			t.Fatalf("testenv: postfix deferred %d message(s)%s", deferred, pf.LogTail(20))
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: postfix still has %d queued message(s) after %v%s", n, timeout, pf.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// queued counts queue files in the queues a message passes through.
func (pf *Postfix) queued() (n, deferred int, err error) {
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		err = filepath.WalkDir(filepath.Join(pf.queueDir, q), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil // the queue manager moved or removed it
				}
				return err
			}
			if d.Type().IsRegular() {
				n++
				if q == "deferred" {
					deferred++
				}
			}
			return nil
		})
		if err != nil {
			return 0, 0, err
		}
	}
	return n, deferred, nil
}

// Messages waits until the queue is idle (see Idle; up to 20s) and returns
// what was delivered to rcpt, in delivery order.
func (pf *Postfix) Messages(t T, rcpt string) []Delivered {
	t.Helper()
	pf.Idle(t, 20*time.Second)
	out, err := readDelivered(pf.Maildir(rcpt), strings.ToLower(rcpt))
	if err != nil {
		t.Fatalf("testenv: read maildir of %s: %v", rcpt, err)
	}
	return out
}

// WaitFor polls until rcpt's Maildir holds at least n messages and
// returns them, or fails the test after timeout.
func (pf *Postfix) WaitFor(t T, rcpt string, n int, timeout time.Duration) []Delivered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		out, err := readDelivered(pf.Maildir(rcpt), strings.ToLower(rcpt))
		if err != nil {
			t.Fatalf("testenv: read maildir of %s: %v", rcpt, err)
		}
		if len(out) >= n {
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: %d message(s) for %s after %v, want %d%s", len(out), rcpt, timeout, n, pf.LogTail(20))
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// maildirTime parses Maildir names "SECONDS.V..I..M<microseconds>.host"
// (the virtual agent's form), to sort deliveries by time.
var maildirTime = regexp.MustCompile(`^(\d+)\.[^.]*M(\d+)`)

func readDelivered(md, rcpt string) ([]Delivered, error) {
	files, err := scanMaildir(md)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // nothing delivered yet: virtual(8) creates the Maildir
	}
	if err != nil {
		return nil, err
	}
	out := make([]Delivered, 0, len(files))
	for _, f := range files {
		d := Delivered{Recipient: rcpt, File: f.Path, Data: f.Data}
		if line, _, ok := bytes.Cut(f.Data, []byte("\n")); ok && bytes.HasPrefix(line, []byte("Return-Path: ")) {
			d.ReturnPath = pathAddr(string(line[len("Return-Path: "):]))
		}
		out = append(out, d)
	}
	key := func(name string) (int64, int64) {
		m := maildirTime.FindStringSubmatch(filepath.Base(name))
		if m == nil {
			return 0, 0
		}
		s, _ := strconv.ParseInt(m[1], 10, 64)
		us, _ := strconv.ParseInt(m[2], 10, 64)
		return s, us
	}
	sort.SliceStable(out, func(i, j int) bool {
		si, ui := key(out[i].File)
		sj, uj := key(out[j].File)
		if si != sj {
			return si < sj
		}
		if ui != uj {
			return ui < uj
		}
		return filepath.Base(out[i].File) < filepath.Base(out[j].File)
	})
	return out, nil
}

// lookupUser returns the uid and primary gid of a system account.
func lookupUser(name string) (uid, gid int, err error) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			u, err1 := strconv.Atoi(f[2])
			g, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				return u, g, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("system user %q not found in /etc/passwd", name)
}

// groupExists reports whether the system has the named group.
func groupExists(name string) bool {
	data, err := os.ReadFile("/etc/group")
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte("\n"), data...), []byte("\n"+name+":"))
}

// SharedPostfix starts one Postfix for a whole test binary, on first use,
// so that a package's tests do not each pay for a start. Declare it as a
// package variable with the Options every test needs (tests keep apart by
// using their own recipients), call Get from each test, and Close from
// TestMain after m.Run.
type SharedPostfix struct {
	Options PostfixOptions

	once sync.Once
	sess Session
	pf   *Postfix
	err  error
}

// Get returns the running instance, starting it on first use. A missing
// Postfix skips (or, when Required, fails) each calling test; a failed
// start fails each calling test with the reason.
func (s *SharedPostfix) Get(t T) *Postfix {
	t.Helper()
	NeedPostfix(t)
	s.once.Do(func() {
		s.sess.Name = "testenv shared postfix"
		s.err = Guard(func() { s.pf = StartPostfix(&s.sess, s.Options) })
	})
	if s.err != nil {
		t.Fatalf("%v", s.err)
	}
	return s.pf
}

// Close stops the instance (if it was started) and removes its directory.
func (s *SharedPostfix) Close() { s.sess.Close() }
