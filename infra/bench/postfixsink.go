package main

// --sink postfix: a private Postfix (testenv.StartPostfix) whose virtual
// transport is discard(8), as the SMTP destination. It exists for what
// smtp-sink cannot show: smtp-sink 3.7 does not offer CHUNKING, so BDAT
// (RFC 3030) needs a real smtpd, and a real smtpd is also what an Exchange
// receive connector resembles: it queues each message (cleanup(8) writes
// and fsyncs a queue file) before it answers 250.
//
// smtp-sink stays the default because that same queueing is a cost of the
// destination, not of the tool: with two cores the queue file, qmgr(8) and
// discard(8) compete with the tool measured and with Dovecot, and the
// tables would no longer compare with the earlier ones. Use --sink postfix
// for the BDAT and "real receiver" rows.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// Sinks.
const (
	sinkSMTPSink = "smtp-sink"
	sinkPostfix  = "postfix"
)

// postfixSink counts the messages discard(8) has disposed of: one
// "status=sent (bench-sink)" line per message in Postfix's log (every tool
// sends each message to one recipient).
type postfixSink struct {
	pf  *testenv.Postfix
	log string

	mu       sync.Mutex
	off      int64 // log octets scanned, up to the last complete line
	sent     int
	failures []string // deferred or bounced: the destination broke
}

// benchRcpt is the one address every tool delivers to: popconn's
// deliver_to for mailbox "bench", fetchmail's smtpname.
const benchRcpt = "bench@corp.example"

func startPostfixSink(s *testenv.Session) *postfixSink {
	pf := testenv.StartPostfix(s, testenv.PostfixOptions{
		Hostname:   "sink.bench.example",
		Recipients: []string{benchRcpt},
		// Above workload c's 50 MB; the default (10,240,000) would refuse it.
		MessageSizeLimit: 200_000_000,
	})
	p := &postfixSink{pf: pf, log: filepath.Join(pf.Dir, "postfix.log")}
	// testenv delivers to Maildirs with virtual(8); the bench wants nothing
	// stored, so the virtual transport becomes discard(8), and the master
	// re-reads main.cf on SIGHUP (what `postfix reload` sends).
	conf := filepath.Join(pf.Dir, "config")
	if out, err := exec.Command("postconf", "-c", conf, "-e", "virtual_transport=discard:bench-sink").CombinedOutput(); err != nil {
		s.Fatalf("bench: postconf: %v: %s", err, out)
	}
	if err := syscall.Kill(pf.PID, syscall.SIGHUP); err != nil {
		s.Fatalf("bench: reload postfix: %v", err)
	}
	// The master logs "reload" once it has re-read its configuration.
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(p.log)
		if bytes.Contains(data, []byte("reload -- version")) {
			p.off = int64(len(data))
			break
		}
		if time.Now().After(deadline) {
			s.Fatalf("bench: postfix did not reload with the discard transport%s", pf.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Addr is the smtpd's address.
func (p *postfixSink) Addr() string { return p.pf.Addr }

// Messages scans the log from where it stopped and returns the running
// count; a deferred or bounced message is an error (the sink broke, and a
// tool's count would be wrong).
func (p *postfixSink) Messages() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.Open(p.log)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(p.off, io.SeekStart); err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, possibly within a line the log writer has not finished: read again next time
		}
		p.off += int64(len(line))
		p.sent += countLogLine(line, &p.failures)
	}
	if len(p.failures) > 0 {
		return p.sent, fmt.Errorf("postfix sink: %s", p.failures[0])
	}
	return p.sent, nil
}

// countLogLine is 1 for discard(8)'s line for a message, 0 otherwise; a
// deferred or bounced delivery is added to failures.
func countLogLine(line []byte, failures *[]string) int {
	switch {
	case bytes.Contains(line, []byte(" status=sent (bench-sink)")):
		return 1
	case bytes.Contains(line, []byte(" status=deferred")), bytes.Contains(line, []byte(" status=bounced")):
		*failures = append(*failures, string(bytes.TrimSpace(line)))
	}
	return 0
}
