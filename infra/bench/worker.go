package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// Tools compared.
const (
	toolFetchmail = "fetchmail"
	toolMpop      = "mpop"
	toolRaw       = "raw"
	toolRawPipe   = "raw-pipelined"
	toolPopconn   = "popconn"
)

// deliversToSink: the tools that forward over SMTP. mpop stores into a
// maildir of its own and the raw clients discard, so the sink must count
// none of their messages.
func deliversToSink(tool string) bool { return tool == toolFetchmail || tool == toolPopconn }

// Job is one timed run of one tool on one freshly seeded mailbox.
type Job struct {
	Tool     string
	Workload Workload
	TLS      bool
	// RTT, when not 0, puts the POP3 server and the sink each behind a
	// delay proxy (delay.go) adding this round-trip time.
	RTT   time.Duration
	RunID int
	// CPUProfile, for Tool popconn, runs popconn's code in this program
	// under the Go CPU profiler (see profile.go) and writes the profile
	// here, and an execution trace to CPUProfile+".trace".
	CPUProfile string
}

// Result is what one Job measured and checked.
type Result struct {
	Job
	Net     string  // "host" or "quickack"
	WallSec float64 // from start to exit of the wrapped command (Go monotonic clock)
	TimeV
	Load1 float64 // 1-minute load average just before the run
	// Checks.
	SinkGot      int // messages smtp-sink received during the run
	LeftOnServer int // messages still in the maildir after the run
	Archived     int // popconn only: .eml files in the archive
	Stored       int // mpop only: messages in its maildir
	Err          string
}

// workerConfig is what an env needs besides its servers.
type workerConfig struct {
	Popconn   string // popconn binary
	Fetchmail string // fetchmail binary
	Mpop      string // mpop binary
	Sink      string // sinkSMTPSink or sinkPostfix
	Pipeline  int    // RETRs in flight for the raw-pipelined client
	Self      string // this program (for the raw client and profiled popconn)
	Workdir   string // parent of run directories
	Verify    bool   // dump what smtp-sink receives and compare bodies
	// PopconnWrap is put before popconn's command line (after time -v), for
	// diagnostics such as "strace -f -c -o FILE"; it skews the timings.
	PopconnWrap []string
	// PopconnData, if set, is where popconn's archive and ledger go instead
	// of the run directory (e.g. a tmpfs, to see popconn without disk
	// flushes; fsync on tmpfs returns at once).
	PopconnData string
	Timeout     time.Duration
}

// sinkCounter is the SMTP destination: the counting smtp-sink, or in verify
// mode testenv's dumping one.
type sinkCounter interface {
	Messages() (int, error)
}

// env is one set of servers (Dovecot and smtp-sink) in one network
// namespace, and runs Jobs against them one at a time; with an RTT, through
// delay proxies in the same namespace.
type env struct {
	s        *testenv.Session
	net      string
	cfg      workerConfig
	dove     *testenv.Dovecot
	sink     sinkCounter
	sinkAddr string
	dumpSink *testenv.SMTPSink // verify mode only
	verified int               // dumps already checked
	user     string
	passFile string
	uid, gid int
	// proxies by target, started at the first job with an RTT and kept
	// (their delay set per job) until the session ends.
	proxies map[string]*DelayProxy
}

const (
	benchUser = "bench"
	benchPass = "bench-Pass-7f3a"
)

func newEnv(s *testenv.Session, netName string, cfg workerConfig) *env {
	e := &env{s: s, net: netName, cfg: cfg, user: benchUser, proxies: map[string]*DelayProxy{}}
	if err := os.MkdirAll(cfg.Workdir, 0o755); err != nil {
		s.Fatalf("bench: %v", err)
	}
	e.dove = testenv.StartDovecot(s, testenv.DovecotOptions{
		Users: map[string]string{benchUser: benchPass},
		// Each run starts one session; keep Dovecot's own logging quiet.
		ExtraConf: "auth_verbose = no\n",
	})
	switch {
	case cfg.Verify:
		e.dumpSink = testenv.StartSMTPSink(s, testenv.SMTPSinkOptions{})
		e.sink = dumpCounter{e.dumpSink, s}
		e.sinkAddr = e.dumpSink.Addr
	case cfg.Sink == sinkPostfix:
		ps := startPostfixSink(s)
		e.sink = ps
		e.sinkAddr = ps.Addr()
	default:
		cs := startCountingSink(s, e.dove.Dir)
		e.sink = cs
		e.sinkAddr = cs.Addr
	}
	fi, err := os.Stat(e.dove.Maildir(benchUser))
	if err != nil {
		s.Fatalf("bench: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	e.uid, e.gid = int(st.Uid), int(st.Gid)
	e.passFile = filepath.Join(cfg.Workdir, "pop-pass-"+netName)
	if err := os.WriteFile(e.passFile, []byte(benchPass+"\n"), 0o600); err != nil {
		s.Fatalf("bench: %v", err)
	}
	return e
}

type dumpCounter struct {
	sink *testenv.SMTPSink
	s    *testenv.Session
}

func (d dumpCounter) Messages() (n int, err error) {
	err = testenv.Guard(func() { n = len(d.sink.Messages(d.s)) })
	return n, err
}

// maildirCount counts messages in new/ and cur/.
func maildirCount(md string) (int, error) {
	n := 0
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return 0, err
		}
		n += len(entries)
	}
	return n, nil
}

// via returns the address a job's tool connects to for target: target
// itself without an RTT, else a delay proxy in front of it set to the job's
// RTT.
func (e *env) via(target string, rtt time.Duration) (string, error) {
	if rtt == 0 {
		return target, nil
	}
	p := e.proxies[target]
	if p == nil {
		var err error
		if p, err = StartDelayProxy(target, rtt); err != nil {
			return "", err
		}
		e.proxies[target] = p
		e.s.Cleanup(func() { p.Close() })
	}
	p.SetRTT(rtt)
	return p.Addr(), nil
}

// prepare empties the mailbox state Dovecot keeps (index, uidlist: each run
// starts as a maildir that has just received its mail) and seeds it.
func (e *env) prepare(job Job) error {
	md := e.dove.Maildir(e.user)
	if err := resetMaildir(md); err != nil {
		return err
	}
	return Seed(md, job.Workload, job.RunID, e.uid, e.gid)
}

// resetMaildir removes every message and Dovecot's own files (index,
// uidlist) from md, leaving new/, cur/ and tmp/ empty.
func resetMaildir(md string) error {
	for _, sub := range []string{"new", "cur", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return err
		}
		for _, en := range entries {
			if err := os.Remove(filepath.Join(md, sub, en.Name())); err != nil {
				return err
			}
		}
	}
	entries, err := os.ReadDir(md)
	if err != nil {
		return err
	}
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "dovecot") {
			if err := os.RemoveAll(filepath.Join(md, en.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// Run seeds the mailbox, runs the tool under /usr/bin/time -v, and checks
// that every message reached the sink and left the POP3 server.
func (e *env) Run(job Job) (res Result) {
	res = Result{Job: job, Net: e.net}
	fail := func(format string, args ...any) Result {
		res.Err = fmt.Sprintf(format, args...)
		return res
	}
	if err := e.prepare(job); err != nil {
		return fail("seed mailbox: %v", err)
	}
	runDir, err := os.MkdirTemp(e.cfg.Workdir, fmt.Sprintf("run-%d-%s-", job.RunID, job.Tool))
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(runDir)
	popAddr := e.dove.Addr
	if job.TLS {
		popAddr = e.dove.TLSAddr
	}
	if popAddr, err = e.via(popAddr, job.RTT); err != nil {
		return fail("delay proxy: %v", err)
	}
	sinkAddr, err := e.via(e.sinkAddr, job.RTT)
	if err != nil {
		return fail("delay proxy: %v", err)
	}
	argv, checkTool, err := e.command(job, runDir, popAddr, sinkAddr)
	if err != nil {
		return fail("%v", err)
	}
	sinkBefore, err := e.sink.Messages()
	if err != nil {
		return fail("smtp-sink counter: %v", err)
	}
	res.Load1 = load1()

	outFile := filepath.Join(runDir, "output.txt")
	tail := func() string { return tailFile(outFile, 15) }
	res.WallSec, res.TimeV, err = runTimed(argv, runDir, e.cfg.Timeout)
	keepOutput(outFile, job)
	if err != nil {
		return fail("%s: %v%s", job.Tool, err, tail())
	}

	want := job.Workload.Count
	if !deliversToSink(job.Tool) {
		want = 0 // look once: the sink must have counted nothing
	}
	if res.SinkGot, err = sinkReceived(e.sink, sinkBefore, want); err != nil {
		return fail("smtp-sink counter: %v", err)
	}
	if res.LeftOnServer, err = maildirCount(e.dove.Maildir(e.user)); err != nil {
		return fail("count maildir: %v", err)
	}
	if res.LeftOnServer != 0 {
		return fail("%s left %d of %d messages on the POP3 server%s", job.Tool, res.LeftOnServer, want, tail())
	}
	switch {
	case !deliversToSink(job.Tool) && res.SinkGot != 0:
		return fail("the sink received %d messages during a %s run", res.SinkGot, job.Tool)
	case deliversToSink(job.Tool) && res.SinkGot != want:
		return fail("smtp-sink received %d messages from %s, want %d%s", res.SinkGot, job.Tool, want, tail())
	}
	if checkTool != nil {
		if err := checkTool(&res, outFile); err != nil {
			return fail("%s: %v%s", job.Tool, err, tail())
		}
	}
	if e.dumpSink != nil && deliversToSink(job.Tool) {
		if err := e.verifyDumps(job); err != nil {
			return fail("%s: %v", job.Tool, err)
		}
	}
	return res
}

// sinkReceived is how many messages sink counted since it showed before,
// waiting up to 5 s for the count to reach want (smtp-sink prints its
// counter after the final "." a little later than the tool may exit).
func sinkReceived(sink sinkCounter, before, want int) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := sink.Messages()
		if err != nil {
			return 0, err
		}
		if got := n - before; got >= want || time.Now().After(deadline) {
			return got, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runTimed runs argv under /usr/bin/time -v in runDir, with HOME=runDir,
// its output in runDir/output.txt and time's report in runDir/time-v.txt,
// killing its process group after timeout. It returns the wall time and
// what time -v measured; a non-zero exit status is an error.
func runTimed(argv []string, runDir string, timeout time.Duration) (float64, TimeV, error) {
	timeFile := filepath.Join(runDir, "time-v.txt")
	out, err := os.Create(filepath.Join(runDir, "output.txt"))
	if err != nil {
		return 0, TimeV{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-v", "-o", timeFile}, argv...)...)
	cmd.Dir = runDir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "HOME="+runDir, "LANG=C", "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	runErr := cmd.Run()
	wall := time.Since(start).Seconds()
	out.Close()
	if ctx.Err() != nil {
		return wall, TimeV{}, fmt.Errorf("timed out after %v", timeout)
	}
	tf, err := os.Open(timeFile)
	if err != nil {
		return wall, TimeV{}, fmt.Errorf("no time -v output (%v, run: %v)", err, runErr)
	}
	tv, err := ParseTimeV(tf)
	tf.Close()
	if err != nil {
		return wall, tv, err
	}
	if runErr != nil || tv.ExitCode != 0 {
		return wall, tv, fmt.Errorf("exited with status %d (%v)", tv.ExitCode, runErr)
	}
	return wall, tv, nil
}

// command builds the argv (after /usr/bin/time -v) of job and a check to
// run on its output.
func (e *env) command(job Job, runDir, popAddr, sinkAddr string) ([]string, func(*Result, string) error, error) {
	switch job.Tool {
	case toolFetchmail:
		rc := filepath.Join(runDir, "fetchmailrc")
		if err := os.WriteFile(rc, []byte(fetchmailRC(popAddr, sinkAddr, job.TLS, e.dove.CA.CertFile)), 0o600); err != nil {
			return nil, nil, err
		}
		return []string{e.cfg.Fetchmail, "-f", rc, "--nosyslog", "--nodetach",
			"--pidfile", filepath.Join(runDir, "fetchmail.pid"), "--idfile", filepath.Join(runDir, "fetchmail.ids")}, nil, nil
	case toolMpop:
		return e.mpopCommand(job, runDir, popAddr)
	case toolRaw, toolRawPipe:
		args := []string{e.cfg.Self, "raw", "--addr", popAddr, "--user", e.user, "--pass-file", e.passFile}
		if job.Tool == toolRawPipe {
			args = append(args, "--pipeline", strconv.Itoa(e.cfg.Pipeline))
		}
		if job.TLS {
			args = append(args, "--tls", "--ca-file", e.dove.CA.CertFile, "--server-name", "localhost")
		}
		check := func(res *Result, outFile string) error {
			data, err := os.ReadFile(outFile)
			if err != nil {
				return err
			}
			var got rawReport
			if err := json.Unmarshal(lastLine(data), &got); err != nil {
				return fmt.Errorf("raw client report: %w", err)
			}
			if got.Messages != job.Workload.Count || got.Bytes != job.Workload.Bytes() {
				return fmt.Errorf("raw client read %d messages, %d octets; want %d, %d", got.Messages, got.Bytes, job.Workload.Count, job.Workload.Bytes())
			}
			return nil
		}
		return args, check, nil
	case toolPopconn:
		cfgFile := filepath.Join(runDir, "popconn.yaml")
		dataDir := runDir
		if e.cfg.PopconnData != "" {
			d, err := os.MkdirTemp(e.cfg.PopconnData, "popconn-bench-data-")
			if err != nil {
				return nil, nil, err
			}
			dataDir = d
			e.s.Cleanup(func() { os.RemoveAll(d) })
		}
		archiveDir := filepath.Join(dataDir, "archive")
		if err := os.WriteFile(cfgFile, []byte(popconnConfig(popAddr, sinkAddr, job.TLS, e.dove.CA.CertFile, e.passFile, archiveDir, filepath.Join(dataDir, "ledger.db"))), 0o600); err != nil {
			return nil, nil, err
		}
		args := []string{e.cfg.Popconn, "run", "--once", "--config", cfgFile}
		if job.CPUProfile != "" {
			args = []string{e.cfg.Self, "popconn-pprof", "--cpuprofile", job.CPUProfile, "--trace", job.CPUProfile + ".trace", "--", "run", "--once", "--config", cfgFile}
		}
		args = append(append([]string(nil), e.cfg.PopconnWrap...), args...)
		check := func(res *Result, _ string) error {
			n := 0
			err := filepath.WalkDir(archiveDir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".eml") {
					n++
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("count archive: %w", err)
			}
			res.Archived = n
			if n != job.Workload.Count {
				return fmt.Errorf("archive holds %d messages, want %d", n, job.Workload.Count)
			}
			return nil
		}
		return args, check, nil
	}
	return nil, nil, fmt.Errorf("unknown tool %q", job.Tool)
}

// verifyDumps compares the bodies smtp-sink dumped since the last check with
// the generated messages (matched by Message-ID). Tools may add header
// fields (fetchmail adds Received), so only bodies and the Message-ID count.
func (e *env) verifyDumps(job Job) (err error) {
	var got []testenv.Received
	if err := testenv.Guard(func() { got = e.dumpSink.Messages(e.s) }); err != nil {
		return err
	}
	fresh := got[e.verified:]
	e.verified = len(got)
	msgs := make([][]byte, len(fresh))
	for i, m := range fresh {
		msgs[i] = m.Data
	}
	return checkMessages(msgs, job.Workload)
}

// checkMessages checks that msgs (CRLF line ends) are the workload's
// messages, each exactly once, with the bodies as seeded.
func checkMessages(msgs [][]byte, wl Workload) error {
	seen := map[int]bool{}
	for _, data := range msgs {
		idx, err := messageIndex(data, wl)
		if err != nil {
			return err
		}
		if seen[idx] {
			return fmt.Errorf("message %d received twice", idx)
		}
		seen[idx] = true
		var want bytes.Buffer
		if _, err := WriteMessage(&want, wl, idx); err != nil {
			return err
		}
		wantCRLF := bytes.ReplaceAll(want.Bytes(), []byte("\n"), []byte("\r\n"))
		_, wantBody, _ := bytes.Cut(wantCRLF, []byte("\r\n\r\n"))
		_, gotBody, _ := bytes.Cut(data, []byte("\r\n\r\n"))
		if !bytes.Equal(gotBody, wantBody) {
			return fmt.Errorf("message %d: body differs from what was seeded (%d vs %d octets)", idx, len(gotBody), len(wantBody))
		}
	}
	if len(seen) != wl.Count {
		return fmt.Errorf("verified %d distinct messages, want %d", len(seen), wl.Count)
	}
	return nil
}

func messageIndex(data []byte, wl Workload) (int, error) {
	prefix := fmt.Sprintf("Message-ID: <bench-%s-%d-", wl.Name, wl.Size)
	hdr, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			n, _, _ := strings.Cut(rest, "@")
			return strconv.Atoi(n)
		}
	}
	return 0, fmt.Errorf("received a message without the seeded Message-ID")
}

// fetchmailRC is the rcfile of one fetchmail run: one poll of the bench
// mailbox, everything fetched and deleted, forwarded over SMTP to the sink
// as one recipient, nothing rewritten.
func fetchmailRC(popAddr, sinkAddr string, useTLS bool, caFile string) string {
	host, port := splitHostPort(popAddr)
	sinkHost, sinkPort := splitHostPort(sinkAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "set no bouncemail\nset no spambounce\nset no syslog\n\n")
	fmt.Fprintf(&b, "poll %s with proto POP3 service %s timeout 120\n", host, port)
	fmt.Fprintf(&b, "  user %q there with password %q is %q here\n", benchUser, benchPass, benchUser)
	fmt.Fprintf(&b, "  fetchall nokeep no rewrite no mimedecode limit 0 fetchlimit 0 batchlimit 0\n")
	fmt.Fprintf(&b, "  smtphost \"%s/%s\" smtpname \"bench@corp.example\"\n", sinkHost, sinkPort)
	if useTLS {
		fmt.Fprintf(&b, "  ssl sslproto \"TLS1.2+\" sslcertck sslcertfile %q sslcommonname \"localhost\"\n", caFile)
	} else {
		// Dovecot offers STLS; an empty sslproto keeps fetchmail 6.4 from
		// upgrading opportunistically, so this is really plain POP3.
		fmt.Fprintf(&b, "  sslproto \"\"\n")
	}
	return b.String()
}

// popconnConfig is the configuration of one popconn run: local mode (archive
// folder and bbolt ledger, both fsynced), one mailbox, no per-poll limits.
func popconnConfig(popAddr, sinkAddr string, useTLS bool, caFile, passFile, archiveDir, ledgerPath string) string {
	return popconnGlobalConfig(sinkAddr, archiveDir, ledgerPath, 1) +
		popconnMailboxConfig("bench", popAddr, useTLS, caFile, benchUser, passFile)
}

// popconnGlobalConfig is everything of a local-mode configuration but the
// mailbox entries, which follow it (popconnMailboxConfig).
//
// Settings that the environment may set, so that one build compares
// them; unset, popconn's own defaults hold:
// POPCONN_BENCH_DELIVERIES_IN_FLIGHT (deliveries_in_flight),
// POPCONN_BENCH_POP3_PIPELINE_DEPTH (pop3_pipeline_depth),
// POPCONN_BENCH_REPLY_WINDOW (reply_window),
// POPCONN_BENCH_MAX_CONNECTIONS (delivery.max_connections) and
// POPCONN_BENCH_LOG_LEVEL (log.level, default info; debug shows the
// protocol transcripts, with a timestamp per line).
func popconnGlobalConfig(sinkAddr, archiveDir, ledgerPath string, parallel int) string {
	sinkHost, sinkPort := splitHostPort(sinkAddr)
	opt := func(env, key, indent string) string {
		if v := os.Getenv(env); v != "" {
			return indent + key + ": " + v + "\n"
		}
		return ""
	}
	top := opt("POPCONN_BENCH_DELIVERIES_IN_FLIGHT", "deliveries_in_flight", "") +
		opt("POPCONN_BENCH_POP3_PIPELINE_DEPTH", "pop3_pipeline_depth", "") +
		opt("POPCONN_BENCH_REPLY_WINDOW", "reply_window", "")
	conns := opt("POPCONN_BENCH_MAX_CONNECTIONS", "max_connections", "  ")
	level := "info"
	if v := os.Getenv("POPCONN_BENCH_LOG_LEVEL"); v != "" {
		level = v
	}
	return fmt.Sprintf(`postmaster: postmaster@corp.example
parallel_mailboxes: %d
%sdelivery:
  host: %s
  port: %s
  tls: none
  helo_domain: bench.example
%s  timeout: 120s
archive:
  dir: %s
ledger:
  path: %s
log:
  level: %s
  format: json
mailboxes:
`, parallel, top, sinkHost, sinkPort, conns, archiveDir, ledgerPath, level)
}

// popconnMailboxConfig is one entry of the mailboxes list: everything
// fetched and deleted, delivered to one recipient, no per-poll limits.
func popconnMailboxConfig(id, popAddr string, useTLS bool, caFile, user, passFile string) string {
	tls := "    tls: none\n    allow_plaintext_login: true\n"
	if useTLS {
		tls = fmt.Sprintf("    tls: implicit\n    ca_file: %s\n    server_name: localhost\n", caFile)
	}
	return fmt.Sprintf(`  - id: %s
    server: %s
%s    username: %s
    password: file:%s
    deliver_to: [%s@corp.example]
    after_delivery: delete
    max_messages_per_poll: 0
    max_bytes_per_poll: 0
    poll_timeout: 60m
    timeout: 120s
`, id, popAddr, tls, user, passFile, id)
}

func splitHostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

func load1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func lastLine(data []byte) []byte {
	data = bytes.TrimRight(data, "\n")
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		return data[i+1:]
	}
	return data
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n--- tail of the tool's output ---\n" + strings.Join(lines, "\n")
}

// --- the quick-ACK network namespace ---

// worker runs Jobs in some env: in this process, or in a child process in
// its own network namespace.
type worker interface {
	Run(Job) Result
	Info() string
	Close()
}

type localWorker struct {
	e    *env
	info string
}

func (w *localWorker) Run(j Job) Result { return w.e.Run(j) }
func (w *localWorker) Info() string     { return w.info }
func (w *localWorker) Close()           {}

// nsWorker is a child `bench worker --quickack` started under `unshare -n`:
// a private network namespace whose loopback route has quickack on, with
// its own Dovecot and smtp-sink, so that every server and client of its runs
// talks over that loopback. Jobs go to its stdin as JSON lines; results
// come back on its stdout.
type nsWorker struct {
	cmd  *exec.Cmd
	enc  *json.Encoder
	dec  *json.Decoder
	in   io.WriteCloser
	info string
}

// workerHello is the first line a child worker writes.
type workerHello struct {
	Ready bool
	Info  string
	Err   string
}

func startNSWorker(cfg workerConfig) (*nsWorker, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("unshare (util-linux) not found: %w", err)
	}
	args := []string{"-n", "--", cfg.Self, "worker", "--quickack",
		"--popconn", cfg.Popconn, "--fetchmail", cfg.Fetchmail, "--mpop", cfg.Mpop, "--sink", cfg.Sink, "--pipeline", strconv.Itoa(cfg.Pipeline),
		"--workdir", filepath.Join(cfg.Workdir, "netns"),
		"--run-timeout", cfg.Timeout.String()}
	if cfg.Verify {
		args = append(args, "--verify")
	}
	if cfg.PopconnData != "" {
		args = append(args, "--popconn-data", cfg.PopconnData)
	}
	if len(cfg.PopconnWrap) > 0 {
		args = append(args, "--popconn-wrap", strings.Join(cfg.PopconnWrap, " "))
	}
	cmd := exec.Command(unshare, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start netns worker: %w", err)
	}
	w := &nsWorker{cmd: cmd, enc: json.NewEncoder(in), dec: json.NewDecoder(bufio.NewReader(out)), in: in}
	var hello workerHello
	if err := w.dec.Decode(&hello); err != nil || !hello.Ready {
		w.Close()
		if err == nil {
			err = errors.New(hello.Err)
		}
		return nil, fmt.Errorf("netns worker did not start: %w", err)
	}
	w.info = hello.Info
	return w, nil
}

func (w *nsWorker) Run(j Job) Result {
	var res Result
	if err := w.enc.Encode(j); err != nil {
		return Result{Job: j, Net: "quickack", Err: fmt.Sprintf("send job to netns worker: %v", err)}
	}
	if err := w.dec.Decode(&res); err != nil {
		return Result{Job: j, Net: "quickack", Err: fmt.Sprintf("netns worker: %v", err)}
	}
	return res
}

func (w *nsWorker) Info() string { return w.info }

// Close ends the child: EOF on stdin makes it stop its servers and exit;
// SIGKILL to its process group if it has not after 30s.
func (w *nsWorker) Close() {
	w.in.Close()
	done := make(chan struct{})
	go func() { w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// setupQuickACK brings up loopback in a fresh network namespace and turns
// on quickack for the whole 127.0.0.0/8 local route, so the kernel ACKs at
// once instead of delaying ACKs (which, with Nagle's algorithm on the other
// side, stalls request/response protocols ~40 ms per exchange).
func setupQuickACK() (string, error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return "", fmt.Errorf("ip (iproute2) not found: %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"route", "change", "local", "127.0.0.0/8", "dev", "lo", "proto", "kernel", "scope", "host", "src", "127.0.0.1", "quickack", "1", "table", "local"},
		// Connections to 127.0.0.1 use this more specific host route, not
		// the /8 one: without quickack here too nothing changes for them.
		{"route", "change", "local", "127.0.0.1", "dev", "lo", "proto", "kernel", "scope", "host", "src", "127.0.0.1", "quickack", "1", "table", "local"},
	} {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return loopbackRoute(), nil
}

// loopbackRoute is the local routes for 127.0.0.0/8 and 127.0.0.1 of the
// current namespace, joined with "; ".
func loopbackRoute() string {
	var routes []string
	for _, dst := range []string{"127.0.0.0/8", "127.0.0.1"} {
		out, err := exec.Command("ip", "route", "show", "table", "local", "exact", dst).CombinedOutput()
		if err != nil {
			return "unknown (" + err.Error() + ")"
		}
		routes = append(routes, strings.TrimSpace(string(out)))
	}
	return strings.Join(routes, "; ")
}

// workerMain is `bench worker`: the child side of nsWorker.
func workerMain(cfg workerConfig, quickack bool) int {
	enc := json.NewEncoder(os.Stdout)
	s := &testenv.Session{Name: "bench worker", SkipHint: "make bench-compare installs what is needed"}
	defer s.Close()
	var e *env
	info := ""
	err := testenv.Guard(func() {
		if quickack {
			route, err := setupQuickACK()
			if err != nil {
				s.Fatalf("%v", err)
			}
			if strings.Count(route, "quickack 1") != 2 {
				s.Fatalf("quickack not set on the loopback route: %s", route)
			}
			info = route
		}
		e = newEnv(s, "quickack", cfg)
	})
	if err != nil {
		enc.Encode(workerHello{Err: err.Error()})
		return 1
	}
	enc.Encode(workerHello{Ready: true, Info: info})
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var j Job
		if err := dec.Decode(&j); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			fmt.Fprintf(os.Stderr, "bench worker: %v\n", err)
			return 1
		}
		var res Result
		if err := testenv.Guard(func() { res = e.Run(j) }); err != nil {
			res = Result{Job: j, Net: "quickack", Err: err.Error()}
		}
		if err := enc.Encode(res); err != nil {
			return 1
		}
	}
}

// keepOutput copies a run's output (popconn's JSON log, with a timestamp
// per line) into the directory POPCONN_BENCH_KEEP_OUTPUT names, if set,
// as run-<id>-<tool>.txt: where a run's time went, line by line.
func keepOutput(outFile string, job Job) {
	dir := os.Getenv("POPCONN_BENCH_KEEP_OUTPUT")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(outFile)
	if err != nil {
		return
	}
	name := fmt.Sprintf("run-%d-%s.txt", job.RunID, strings.ReplaceAll(job.Tool, " ", "_"))
	_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
}
