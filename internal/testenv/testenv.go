// Package testenv starts real mail servers for integration tests: a private
// Dovecot (POP3, POP3 STLS, POP3S) and Postfix's smtp-sink (SMTP), plus a
// scripted in-process SMTP server (emersion/go-smtp) for faults a real
// server cannot stage. Certificates come from a throwaway test CA generated
// at test time. For the AWS side it runs DynamoDB Local, versitygw (S3),
// moto (SQS; moto.go) and the Lambda Runtime Interface Emulator with a
// function's bootstrap (lambdarie.go, whose file comment lists the
// emulator's behaviour the tests rely on).
//
// Guarantees:
//   - Every server listens on 127.0.0.1 only, on a port chosen at start
//     (listen on :0, close, hand the number to the server, retry on a bind
//     race). Nothing ever targets another address.
//   - Every external server is started by the test, runs in its own process
//     group and is stopped by PID from t.Cleanup (SIGTERM, wait, then
//     SIGKILL of that process group); the cleanup waits for the exit.
//   - When a server binary is missing, the test is skipped with a reason,
//     unless Required() (CI=true or POPCONN_INTEGRATION=1), in which case
//     it fails. Start failures include the tail of the server's log.
//   - Certificates never leave the test's temporary directories and no
//     password is logged by this package.
//
// What it cannot do: it needs Linux (process groups, /proc, inotify). As
// root the servers drop to nobody (mail files, smtp-sink -u), dovenull and
// dovecot; as an ordinary user everything runs as that user. Passwords given
// to StartDovecot are stored in plain text in the server directory
// (throwaway test credentials). smtp-sink has no TLS support: when
// SMTPSinkOptions.TLS is set, an in-process STARTTLS front (see
// StartSMTPSink) terminates TLS and forwards the bytes unchanged. smtp-sink
// also strips every CR from what it stores; see SMTPSink.Messages for the
// exact reconstruction rule.
//
// Set POPCONN_KEEP_TESTDIRS=1 to keep server directories (configuration,
// logs, maildirs, dumps) after the test for manual inspection; their paths
// are logged.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Required reports whether integration servers must be present: CI=true or
// POPCONN_INTEGRATION=1. When it is true a missing server fails the test
// instead of skipping it.
func Required() bool {
	if v := os.Getenv("CI"); strings.EqualFold(v, "true") || v == "1" {
		return true
	}
	v := os.Getenv("POPCONN_INTEGRATION")
	return v == "1" || strings.EqualFold(v, "true")
}

// NeedBinary finds the executable name: first in PATH, then in candidates
// (full paths), then in /usr/sbin, /usr/local/sbin and /sbin (Debian keeps
// dovecot and smtp-sink there, outside a normal user's PATH). If none is
// found it calls t.Skip with a reason, or t.Fatal when Required().
func NeedBinary(t T, name string, candidates ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	tried := []string{"PATH"}
	all := append([]string{}, candidates...)
	if !strings.Contains(name, "/") {
		all = append(all, "/usr/sbin/"+name, "/usr/local/sbin/"+name, "/sbin/"+name)
	}
	for _, c := range all {
		tried = append(tried, c)
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return c
		}
	}
	msg := fmt.Sprintf("%s not installed (looked in %s); install with infra/install-deps.sh (as root)", name, strings.Join(tried, ", "))
	if Required() {
		t.Fatalf("%s; integration servers are required (CI=true or POPCONN_INTEGRATION=1)", msg)
	}
	t.Skip(msg)
	return ""
}

// keepDirs reports whether server directories should survive the test.
func keepDirs() bool { return os.Getenv("POPCONN_KEEP_TESTDIRS") == "1" }

// serverDir makes a directory for a server process. Unlike t.TempDir it is
// world-traversable (0755), because servers drop root to unprivileged users
// (dovenull, dovecot, nobody) that must reach files inside it.
func serverDir(t T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "popconn-"+prefix+"-")
	if err != nil {
		t.Fatalf("testenv: create server dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: chmod server dir: %v", err)
	}
	t.Cleanup(func() {
		if keepDirs() {
			t.Logf("testenv: kept %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("testenv: remove %s: %v", dir, err)
		}
	})
	return dir
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// caller hands it to a server and retries with a new one if the server then
// fails to bind (another process may take it in between).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("testenv: find free port: %w", err)
	}
	return port, nil
}

// proc is a server process started by this package.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logFile string // stdout+stderr of the process

	done     chan struct{} // closed when the process has exited
	waitErr  error
	stopOnce sync.Once
}

// startProc runs path with args in its own process group, stdout and stderr
// appended to logFile.
func startProc(name, path string, args []string, logFile string, deathSig syscall.Signal) (*proc, error) {
	return startProcIO(name, path, args, procIO{
		env:    append(os.Environ(), "LANG=C", "LC_ALL=C"),
		stdout: logFile,
		stderr: logFile,
	}, deathSig)
}

// procIO is how startProcIO sets up a process: its exact environment, the
// files its stdout and stderr are appended to (one file when the names are
// equal), and its working directory ("" for ours).
type procIO struct {
	env            []string
	stdout, stderr string
	dir            string
}

// startProcIO runs path with args in its own process group as io says.
func startProcIO(name, path string, args []string, io procIO, deathSig syscall.Signal) (*proc, error) {
	out, err := os.OpenFile(io.stdout, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: open log for %s: %w", name, err)
	}
	errOut := out
	if io.stderr != io.stdout {
		if errOut, err = os.OpenFile(io.stderr, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			out.Close()
			return nil, fmt.Errorf("testenv: open log for %s: %w", name, err)
		}
	}
	closeLogs := func() {
		out.Close()
		if errOut != out {
			errOut.Close()
		}
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = out
	cmd.Stderr = errOut
	cmd.Env = io.env
	cmd.Dir = io.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Best effort against leaks when the test binary is killed: the
		// kernel signals the server when the Go thread that forked it exits.
		// (It is cleared by the kernel if the server switches uid.)
		Pdeathsig: deathSig,
	}
	if err := cmd.Start(); err != nil {
		closeLogs()
		return nil, fmt.Errorf("testenv: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logFile: io.stdout, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		closeLogs()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process by PID: SIGTERM, up to grace to exit, then SIGKILL
// to its process group (which holds only processes it started). It waits for
// the exit and is idempotent.
func (p *proc) stop(grace time.Duration) error {
	var err error
	p.stopOnce.Do(func() {
		pid := p.pid()
		if !p.exited() {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					err = fmt.Errorf("testenv: %s (pid %d) did not exit after SIGKILL", p.name, pid)
					return
				}
			}
		}
		// Children (Dovecot's pop3-login, auth, ...) exit on their own
		// shortly after their master; give them a moment, then end the
		// rest of the group, and wait until it is empty so the ports and
		// files are free when stop returns.
		if !waitGroupGone(pid, 3*time.Second) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			if !waitGroupGone(pid, 5*time.Second) {
				err = fmt.Errorf("testenv: process group of %s (pid %d) still alive after SIGKILL", p.name, pid)
			}
		}
	})
	return err
}

// waitGroupGone polls until process group pgid has no live member or
// timeout passes. Zombies do not count: orphaned children are reparented to
// init, which reaps them in its own time; they hold no port or file.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !groupHasLive(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupHasLive reports whether a non-zombie process is in group pgid.
func groupHasLive(pgid int) bool {
	if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
		return false
	}
	found := false
	if !liveProcs(func(_, _, pgrp int) bool {
		found = pgrp == pgid
		return !found
	}) {
		return true // cannot tell: assume alive
	}
	return found
}

// liveProcs calls fn for every live (non-zombie) process, from
// /proc/PID/stat ("pid (comm) state ppid pgrp ..."), until fn returns
// false. It reports whether /proc could be read.
func liveProcs(fn func(pid, ppid, pgrp int) bool) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, err1 := strconv.Atoi(f[1])
		pgrp, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && !fn(pid, ppid, pgrp) {
			break
		}
	}
	return true
}

// logTail returns the last n lines of the named files, for failure messages.
func logTail(n int, files ...string) string {
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
	if b.Len() == 0 {
		return "\n(no server log written)"
	}
	return b.String()
}

// bindRace stops a server that did not start and reports whether one of
// its logs says a port was taken in the meantime, so that the caller
// retries with new ports.
func bindRace(t T, name string, attempt int, p *proc, logs ...string) bool {
	t.Helper()
	_ = p.stop(5 * time.Second)
	for _, f := range logs {
		if fileContains(f, "Address already in use") {
			t.Logf("testenv: %s port race (attempt %d), retrying with new ports", name, attempt+1)
			return true
		}
	}
	return false
}

// fileContains reports whether file holds s (used to spot bind races).
func fileContains(file, s string) bool {
	data, err := os.ReadFile(file)
	return err == nil && bytes.Contains(data, []byte(s))
}

// unprivilegedIDs picks the uid/gid servers use for mail files when we run
// as root: the "nobody" account, or 65534 when it is absent.
func unprivilegedIDs() (uid, gid int) {
	uid, gid = 65534, 65534
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return uid, gid
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == "nobody" {
			u, err1 := strconv.Atoi(f[2])
			g, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil && u != 0 {
				return u, g
			}
		}
	}
	return uid, gid
}

// userExists reports whether the system has the named account.
func userExists(name string) bool {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte("\n"), data...), []byte("\n"+name+":"))
}

// waitGreeting dials addr until it answers with a line starting prefix, the
// process exits, or the deadline passes.
func waitGreeting(addr, prefix string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return errProcExited
		}
		lastErr = readGreeting(addr, prefix)
		if lastErr == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testenv: %s did not answer within %v: %w", addr, timeout, lastErr)
}

var errProcExited = errors.New("testenv: server process exited during start")

func readGreeting(addr, prefix string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if n == 0 && err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), prefix) {
		return fmt.Errorf("unexpected greeting %q", buf[:n])
	}
	return nil
}

// T is the part of testing.TB this package uses. *testing.T and
// *testing.B satisfy it; so does the demo's Session, which runs the same
// real servers outside a test.
type T interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	TempDir() string
}
