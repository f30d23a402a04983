package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Received is one mail transaction as a server accepted it.
type Received struct {
	From string   // MAIL FROM address without <>; "" for the null sender
	To   []string // RCPT TO addresses without <>, in the order sent
	// Data is the message as received in DATA: CRLF line ends, dot-unstuffed,
	// without the terminating ".\r\n" (see SMTPSink.Messages for the one
	// smtp-sink limitation).
	Data []byte
}

// SinkDump is a Received with what else smtp-sink recorded.
type SinkDump struct {
	Received
	Helo     string   // argument of the last HELO/EHLO
	MailArgs string   // full MAIL FROM argument, e.g. "<a@b> SIZE=12 BODY=8BITMIME"
	RcptArgs []string // full RCPT TO arguments, e.g. "<c@d> NOTIFY=NEVER"
	File     string   // the dump file
}

// SMTPSinkOptions configures StartSMTPSink.
type SMTPSinkOptions struct {
	// TLS, when set, offers STARTTLS with a certificate from this CA (valid
	// for "localhost" and 127.0.0.1). smtp-sink itself cannot do TLS, so an
	// in-process front terminates it; see StartSMTPSink.
	TLS *CA
	// ExtraArgs are passed to smtp-sink before the options this package
	// manages (-u, -d, -h, which therefore win). Useful ones: -a (do not
	// announce AUTH; smtp-sink answers AUTH with 250, not 235), -r/-f/-q/-Q
	// CMD,... (soft/hard reject, hang up, or 421 and hang up on a command),
	// -w N (delay the 354 reply to DATA), -W CMD:N (delay the reply to CMD,
	// e.g. "-W .:30"), -A N (550 and hang up N seconds after DATA), -8, -e,
	// -E, -p, -P. Do not pass -S or -D: Messages parses the -d dump format.
	//
	// smtp-sink stores the dump when it has read the final ".", before it
	// replies to it: with "-f ." or "-r ." the client gets 500/450 yet the
	// message is listed by Messages, and with "-W .:N" it is listed N
	// seconds before the client sees 250. Use ScriptedSMTP to reject after
	// DATA.
	ExtraArgs []string
}

// sinkHostname is smtp-sink's -h: it names the greeting, the HELO reply and
// the first EHLO reply line, which the STARTTLS front looks for.
const sinkHostname = "smtp-sink.test"

// SMTPSink is a running Postfix smtp-sink (see smtp-sink(1)) capturing every
// mail transaction to a file.
type SMTPSink struct {
	// Addr is where clients connect: smtp-sink itself, or the STARTTLS
	// front when SMTPSinkOptions.TLS is set.
	Addr string
	Dir  string // dumps under Dir/msgs, smtp-sink's output in Dir/smtp-sink.log
	PID  int    // the smtp-sink process
	// SinkAddr is smtp-sink's own listening address (equal to Addr without
	// TLS; behind the front with TLS).
	SinkAddr string
	CA       *CA // the TLS CA, or nil

	proc    *proc
	front   *starttlsFront
	watch   *closeWatch
	mu      sync.Mutex
	done    []string        // dump names in the order smtp-sink closed them
	seen    map[string]bool // names in done
	frozen  bool            // smtp-sink is being stopped: ignore later closes
	dumpDir string
}

// StartSMTPSink runs /usr/sbin/smtp-sink on a free 127.0.0.1 port, dumping
// each mail transaction (-d) under Dir/msgs, waits until it greets, and
// registers a t.Cleanup that stops it by PID. As root it runs with
// "-u nobody" (smtp-sink requires -u for root).
//
// With opts.TLS set, Addr is an in-process STARTTLS front: it forwards
// every byte unchanged to smtp-sink, adds "250-STARTTLS" to the EHLO reply
// before TLS, and on STARTTLS answers "220 2.0.0 Ready to start TLS" itself
// and performs the TLS handshake (RFC 3207), refusing commands pipelined
// after STARTTLS. Once the client sends anything other than EHLO, HELO,
// NOOP or RSET in plaintext, or after TLS, it is a pure byte relay.
func StartSMTPSink(t T, opts SMTPSinkOptions) *SMTPSink {
	t.Helper()
	bin := NeedBinary(t, "smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")
	dir := serverDir(t, "smtp-sink")
	msgs := filepath.Join(dir, "msgs")
	if err := os.Mkdir(msgs, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var userArgs []string
	if os.Geteuid() == 0 {
		uid, gid := unprivilegedIDs()
		if err := os.Chown(msgs, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		// smtp-sink -u takes a user name; "nobody" exists on every Debian.
		userArgs = []string{"-u", "nobody"}
	}
	logFile := filepath.Join(dir, "smtp-sink.log")
	s := &SMTPSink{Dir: dir, CA: opts.TLS, dumpDir: msgs, seen: map[string]bool{}}
	// smtp-sink writes each dump in place and closes it before it sends
	// the 250 reply to ".", and deletes (then closes) aborted ones. The
	// kernel's close-after-write events therefore tell which dumps are
	// complete and in which order they completed.
	w, err := newCloseWatch(msgs)
	if err != nil {
		t.Fatalf("testenv: watch smtp-sink dumps: %v", err)
	}
	s.watch = w
	t.Cleanup(w.Close)

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.SinkAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := append([]string{}, opts.ExtraArgs...)
		args = append(args, userArgs...)
		args = append(args, "-h", sinkHostname, "-d", msgs+"/%Y%m%d%H%M%S.", s.SinkAddr, "64")
		os.Remove(logFile)
		p, err := startProc("smtp-sink", bin, args, logFile, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		lastErr = waitGreeting(s.SinkAddr, "220 ", p, 10*time.Second)
		if lastErr == nil {
			s.proc, s.PID = p, p.pid()
			break
		}
		_ = p.stop(2 * time.Second)
		if fileContains(logFile, "Address already in use") {
			t.Logf("testenv: smtp-sink port race (attempt %d), retrying", attempt+1)
			continue
		}
		break
	}
	if s.proc == nil {
		t.Fatalf("testenv: smtp-sink did not start: %v%s", lastErr, logTail(20, logFile))
	}
	t.Cleanup(func() { s.Stop(t) })
	s.Addr = s.SinkAddr

	if opts.TLS != nil {
		_, _, cert := opts.TLS.Issue(t, "localhost", "127.0.0.1")
		front, err := newStartTLSFront(s.SinkAddr, cert, sinkHostname)
		if err != nil {
			t.Fatalf("testenv: STARTTLS front: %v", err)
		}
		s.front = front
		s.Addr = front.Addr()
		t.Cleanup(front.Close)
	}
	return s
}

// Stop stops smtp-sink (and the STARTTLS front) now; idempotent. Dumps stay
// readable.
func (s *SMTPSink) Stop(t T) {
	t.Helper()
	if s.front != nil {
		s.front.Close()
	}
	s.freeze()
	if err := s.proc.stop(5 * time.Second); err != nil {
		t.Errorf("%v", err)
	}
}

// Messages parses the dumps of all completed transactions, in the order
// smtp-sink completed them (an inotify close-after-write watch on the dump
// directory; smtp-sink closes the dump when it has read the final ".",
// before its reply, so a client that saw 250 always finds its message).
// Transactions still in progress and aborted ones (smtp-sink deletes those
// on RSET, HELO/EHLO or disconnect) are not returned.
//
// smtp-sink stores each DATA byte except every CR, and drops the stuffing
// dot at the start of a line (so the dump holds LF line ends and
// unstuffed lines), then an LF from the terminating ".\r\n". Data is
// rebuilt by removing that final LF and turning every LF into CRLF. This is
// exact for every message whose lines all end in CRLF and which holds no
// other CR or LF byte (what RFC 5321 section 2.3.8 allows). A bare LF comes
// back as CRLF and a bare CR is lost: tests that send such bytes must use
// ScriptedSMTP, which keeps bytes as sent. Envelope arguments containing
// non-printable bytes are stored by smtp-sink with '?' in their place.
func (s *SMTPSink) Messages(t T) []Received {
	t.Helper()
	dumps, err := s.dumps()
	if err != nil {
		t.Fatalf("testenv: smtp-sink dumps: %v", err)
	}
	return received(dumps)
}

// Dumps is Messages with the envelope details smtp-sink records, same
// order and same completeness rule.
func (s *SMTPSink) Dumps(t T) []SinkDump {
	t.Helper()
	dumps, err := s.dumps()
	if err != nil {
		t.Fatalf("testenv: smtp-sink dumps: %v", err)
	}
	return dumps
}

func received(dumps []SinkDump) []Received {
	out := make([]Received, len(dumps))
	for i, d := range dumps {
		out[i] = d.Received
	}
	return out
}

func (s *SMTPSink) dumps() ([]SinkDump, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.collectLocked(); err != nil {
		return nil, err
	}
	var out []SinkDump
	for _, name := range s.done {
		path := filepath.Join(s.dumpDir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // an aborted transaction: smtp-sink deleted it
		}
		if err != nil {
			return nil, err
		}
		rec, complete, err := parseSinkDump(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !complete {
			continue // cannot happen while smtp-sink runs; see freeze
		}
		rec.File = path
		out = append(out, rec)
	}
	return out, nil
}

// collectLocked records dumps closed since the last call. s.mu is held.
func (s *SMTPSink) collectLocked() error {
	if s.frozen {
		return nil
	}
	names, err := s.watch.Drain()
	for _, n := range names {
		if !s.seen[n] {
			s.seen[n] = true
			s.done = append(s.done, n)
		}
	}
	return err
}

// freeze collects the completed dumps and then ignores further closes: when
// smtp-sink is killed the kernel closes the dump of any transaction in
// progress, which must not count as a completed message.
func (s *SMTPSink) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.collectLocked()
	s.frozen = true
}

// parseSinkDump parses one -d dump (format in smtp-sink(1), "DUMP FILE
// FORMAT"): X-Client-Addr, X-Client-Proto, [X-Helo-Args], X-Mail-Args,
// X-Rcpt-Args..., a three-line Received header, then the message. complete
// is false when the Received header (written at DATA) is not there yet.
func parseSinkDump(data []byte) (rec SinkDump, complete bool, err error) {
	r := bufio.NewReader(bytes.NewReader(data))
	off := 0
	readLine := func() (string, bool) {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", false
		}
		off += len(l)
		return strings.TrimSuffix(l, "\n"), true
	}
	sawMail := false
	for {
		line, ok := readLine()
		if !ok {
			return rec, false, nil
		}
		name, value, found := strings.Cut(line, ": ")
		if !found {
			return rec, false, fmt.Errorf("unexpected dump header line %q", line)
		}
		switch name {
		case "X-Client-Addr", "X-Client-Proto":
		case "X-Helo-Args":
			rec.Helo = value
		case "X-Mail-Args":
			rec.MailArgs = value
			rec.From = pathAddr(value)
			sawMail = true
		case "X-Rcpt-Args":
			rec.RcptArgs = append(rec.RcptArgs, value)
			rec.To = append(rec.To, pathAddr(value))
		case "Received":
			// Two continuation lines: "\tby ...;" and "\tDATE".
			for i := 0; i < 2; i++ {
				l, ok := readLine()
				if !ok {
					return rec, false, nil
				}
				if !strings.HasPrefix(l, "\t") {
					return rec, false, fmt.Errorf("unexpected Received continuation %q", l)
				}
			}
			if !sawMail {
				return rec, false, errors.New("dump without X-Mail-Args")
			}
			body := data[off:]
			if len(body) == 0 || body[len(body)-1] != '\n' {
				// The terminator's LF is the last byte written.
				return rec, false, nil
			}
			body = body[:len(body)-1]
			rec.Data = bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
			return rec, true, nil
		default:
			return rec, false, fmt.Errorf("unexpected dump header %q", name)
		}
	}
}

// pathAddr extracts the address from a MAIL/RCPT argument such as
// "<a@b> SIZE=10" (RFC 5321 section 4.1.2); "<>" gives "".
func pathAddr(arg string) string {
	arg = strings.TrimSpace(arg)
	if strings.HasPrefix(arg, "<") {
		if i := strings.IndexByte(arg, '>'); i > 0 {
			return arg[1:i]
		}
	}
	if i := strings.IndexAny(arg, " \t"); i >= 0 {
		return arg[:i]
	}
	return arg
}

// WaitFor polls until at least n transactions are complete and returns
// them, or fails the test after timeout.
func (s *SMTPSink) WaitFor(t T, n int, timeout time.Duration) []Received {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		dumps, err := s.dumps()
		if err != nil {
			t.Fatalf("testenv: smtp-sink dumps: %v", err)
		}
		if len(dumps) >= n {
			return received(dumps)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: smtp-sink has %d complete messages after %v, want %d%s", len(dumps), timeout, n, logTail(10, filepath.Join(s.Dir, "smtp-sink.log")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
