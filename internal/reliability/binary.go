package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	buildMu    sync.Mutex
	builtBin   string
	builtDir   string
	buildError error
)

// PopconnBinary returns the popconn binary to run: Options.Popconn, else
// $POPCONN_BIN, else one built once per process from this module's
// cmd/popconn into a temporary directory (removed by CleanupBuilt).
func PopconnBinary(t T, o *Options) string {
	t.Helper()
	if o.Popconn != "" {
		mustExist(t, o.Popconn)
		return o.Popconn
	}
	if p := os.Getenv("POPCONN_BIN"); p != "" {
		mustExist(t, p)
		return p
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtBin == "" && buildError == nil {
		builtBin, builtDir, buildError = build()
	}
	if buildError != nil {
		t.Fatalf("building popconn: %v", buildError)
	}
	return builtBin
}

func build() (bin, dir string, err error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", errors.New("cannot locate the module source")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir, err = os.MkdirTemp("", "popconn-reliability-bin-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "popconn")
	gobin := "go"
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		gobin = p
	}
	cmd := exec.Command(gobin, "build", "-o", bin, "./cmd/popconn")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build ./cmd/popconn: %v\n%s", err, out)
	}
	return bin, dir, nil
}

// CleanupBuilt removes a binary PopconnBinary built.
func CleanupBuilt() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtDir != "" {
		os.RemoveAll(builtDir)
		builtDir, builtBin = "", ""
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// KillPlan says when RunPopconn sends SIGKILL: once the process has
// written AfterLines output lines (0: at once), after a further Delay.
type KillPlan struct {
	AfterLines int
	Delay      time.Duration
}

// RunResult is one popconn invocation.
type RunResult struct {
	Code   int  // exit code; -1 when killed
	Killed bool // ended by our SIGKILL
	Output string
}

// RunPopconn runs bin with args, stdout and stderr together, and kills it
// by PID as kill says (nil: let it finish, up to 3 minutes).
func RunPopconn(t T, bin string, kill *KillPlan, args ...string) RunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	lines := make(chan struct{}, 1<<16)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			out.WriteString(sc.Text())
			out.WriteByte('\n')
			select {
			case lines <- struct{}{}:
			default:
			}
		}
		io.Copy(io.Discard, pr)
	}()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait(); pw.Close() }()

	killed := false
	var werr error
	if kill == nil {
		werr = <-waitDone
	} else {
		n := 0
		finished := false
		for n < kill.AfterLines && !finished {
			select {
			case <-lines:
				n++
			case werr = <-waitDone:
				finished = true
			}
		}
		if !finished {
			select {
			case werr = <-waitDone:
				finished = true
			case <-time.After(kill.Delay):
			}
		}
		if !finished {
			// SIGKILL this process only, by PID.
			if err := cmd.Process.Signal(syscall.SIGKILL); err == nil {
				killed = true
			}
			werr = <-waitDone
		}
	}
	<-readDone
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = -1
			killed = killed && ws.Signal() == syscall.SIGKILL
		} else {
			killed = false // it exited on its own before the signal landed
		}
	case werr != nil:
		t.Fatalf("run %s: %v", bin, werr)
	default:
		killed = false
	}
	return RunResult{Code: code, Killed: killed, Output: out.String()}
}

// ConfigParams fill the popconn configuration the process scenarios use.
type ConfigParams struct {
	Dir                string // archive/, ledger.db and password files go here
	POPAddr            string
	POPTLS             string // implicit | none
	POPCAFile          string
	AllowPlaintext     bool
	POPPasswordFile    string
	SMTPAddr           string
	SMTPTLS            string // none | starttls
	SMTPCAFile         string
	SMTPPasswordFile   string // "" = no AUTH
	DeliverTo          []string
	LogLevel           string
	PollTimeout        string
	DeliveryTimeout    string
	MaxMessagesPerPoll int
	// DeliveriesInFlight and ReplyWindow set deliveries_in_flight and
	// reply_window when positive (else popconn's defaults).
	DeliveriesInFlight, ReplyWindow int
}

// WriteConfig writes p as a popconn YAML file and returns its path.
func WriteConfig(t T, p ConfigParams) string {
	t.Helper()
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "postmaster: postmaster@corp.example\npoll_interval: 1s\nparallel_mailboxes: 1\n")
	if p.DeliveriesInFlight > 0 {
		fmt.Fprintf(&b, "deliveries_in_flight: %d\n", p.DeliveriesInFlight)
	}
	if p.ReplyWindow > 0 {
		fmt.Fprintf(&b, "reply_window: %d\n", p.ReplyWindow)
	}
	fmt.Fprintf(&b, "retry:\n  interval: 1s\n  max_interval: 2s\n  give_up_after: 24h\n")
	host, port, _ := strings.Cut(p.SMTPAddr, ":")
	fmt.Fprintf(&b, "delivery:\n  host: %s\n  port: %s\n  tls: %s\n  helo_domain: popconn.test\n  timeout: %s\n", host, port, def(p.SMTPTLS, "none"), def(p.DeliveryTimeout, "5s"))
	if p.SMTPCAFile != "" {
		fmt.Fprintf(&b, "  ca_file: %s\n  server_name: localhost\n", p.SMTPCAFile)
	}
	if p.SMTPPasswordFile != "" {
		fmt.Fprintf(&b, "  auth:\n    mechanism: plain\n    username: %s\n    password: file:%s\n", smtpUser, p.SMTPPasswordFile)
	}
	fmt.Fprintf(&b, "archive:\n  dir: %s\nledger:\n  path: %s\n", filepath.Join(p.Dir, "archive"), filepath.Join(p.Dir, "ledger.db"))
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: json\n", def(p.LogLevel, "info"))
	fmt.Fprintf(&b, "mailboxes:\n  - id: sales\n    server: %s\n    tls: %s\n", p.POPAddr, def(p.POPTLS, "implicit"))
	if p.POPCAFile != "" {
		fmt.Fprintf(&b, "    ca_file: %s\n    server_name: localhost\n", p.POPCAFile)
	}
	if p.AllowPlaintext {
		b.WriteString("    allow_plaintext_login: true\n")
	}
	fmt.Fprintf(&b, "    username: %s\n    password: file:%s\n", popUser, p.POPPasswordFile)
	to := p.DeliverTo
	if len(to) == 0 {
		to = []string{"sales@corp.example"}
	}
	fmt.Fprintf(&b, "    deliver_to: [%s]\n    after_delivery: delete\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "    max_messages_per_poll: %d\n    max_bytes_per_poll: 0\n", p.MaxMessagesPerPoll)
	fmt.Fprintf(&b, "    poll_timeout: %s\n    timeout: 10s\n", def(p.PollTimeout, "60s"))
	path := filepath.Join(p.Dir, "popconn.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSecret writes a password file (mode 0600) and returns its path.
func writeSecret(t T, dir, name, value string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
