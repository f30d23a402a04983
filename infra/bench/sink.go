package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// countingSink is Postfix's smtp-sink with no dump (-d would write every
// message to disk and slow the destination down) and running counters (-c),
// which it prints to stdout as "sess=N quit=N mesg=N\r" whenever an SMTP
// session ends, QUIT arrives or a message's final "." is received. The
// benchmark reads mesg to check that every message arrived.
type countingSink struct {
	Addr    string
	PID     int
	outFile string
	cmd     *exec.Cmd
	done    chan struct{}
}

func startCountingSink(t testenv.T, dir string) *countingSink {
	t.Helper()
	bin := testenv.NeedBinary(t, "smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("bench: find a free port: %v", err)
		}
		addr := l.Addr().String()
		l.Close()
		s := &countingSink{Addr: addr, outFile: filepath.Join(dir, fmt.Sprintf("smtp-sink-%d.out", attempt)), done: make(chan struct{})}
		out, err := os.Create(s.outFile)
		if err != nil {
			t.Fatalf("bench: %v", err)
		}
		var args []string
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody") // smtp-sink refuses to run as root without -u
		}
		args = append(args, "-c", "-h", "sink.bench.example", addr, "256")
		s.cmd = exec.Command(bin, args...)
		s.cmd.Stdout, s.cmd.Stderr = out, out
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			out.Close()
			t.Fatalf("bench: start smtp-sink: %v", err)
		}
		out.Close()
		s.PID = s.cmd.Process.Pid
		go func() { s.cmd.Wait(); close(s.done) }()
		if lastErr = waitSMTPGreeting(addr, s.done, 10*time.Second); lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
		s.stop()
	}
	t.Fatalf("bench: smtp-sink did not start: %v", lastErr)
	return nil
}

func waitSMTPGreeting(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("smtp-sink exited during start")
		default:
		}
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 256)
			n, _ := c.Read(buf)
			c.Close()
			if bytes.HasPrefix(buf[:n], []byte("220 ")) {
				return nil
			}
			err = fmt.Errorf("greeting %q", buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// stop ends smtp-sink by PID: SIGTERM, then SIGKILL to its process group.
func (s *countingSink) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	syscall.Kill(s.PID, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		syscall.Kill(-s.PID, syscall.SIGKILL)
		<-s.done
	}
}

// Messages returns smtp-sink's message counter: the last "mesg=N" it
// printed.
func (s *countingSink) Messages() (int, error) {
	f, err := os.Open(s.outFile)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	off := fi.Size() - 256
	if off < 0 {
		off = 0
	}
	tail, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return 0, err
	}
	return lastMesgCounter(tail)
}

// lastMesgCounter finds the last complete "mesg=N" record of smtp-sink -c
// output (records end with "\r"; no output yet means 0).
func lastMesgCounter(out []byte) (int, error) {
	recs := strings.Split(string(out), "\r")
	for i := len(recs) - 2; i >= 0; i-- { // the last element follows the final "\r": incomplete or empty
		for _, f := range strings.Fields(recs[i]) {
			if v, ok := strings.CutPrefix(f, "mesg="); ok {
				return strconv.Atoi(v)
			}
		}
	}
	if strings.TrimSpace(string(out)) == "" {
		return 0, nil
	}
	if len(out) < 256 {
		return 0, fmt.Errorf("bench: no mesg= counter in smtp-sink output %q", out)
	}
	return 0, fmt.Errorf("bench: no complete mesg= counter in the last 256 bytes of smtp-sink output")
}
