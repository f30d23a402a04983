package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// MotoVersion is the moto release the tests were checked against. It
// comes with the machine (pip, under pyenv's python3) and is not installed
// by infra/install-deps.sh: PyPI is not reachable from CI.
const MotoVersion = "5.2.1"

// MotoAccountID is the account moto puts every resource in (queue URLs
// and ARNs name it).
const MotoAccountID = "123456789012"

// Moto is a running moto_server: moto's emulation of AWS APIs behind one
// HTTP endpoint, used here for SQS. It routes each request by the service
// its signature names, so one instance serves every client.
//
// Facts tests rely on (checked by moto_test.go against moto 5.2.1; SQS
// facts in the comment of TestMotoSQSFIFO):
//   - Endpoint is plain http on 127.0.0.1 (moto_server -H 127.0.0.1).
//   - State is in memory, shared by all clients whatever their
//     credentials (any access key is accepted, nothing is verified), and
//     lives until Stop; Reset empties it. Give each test its own queues.
//   - Starting takes about half a second.
type Moto struct {
	Endpoint  string // http://127.0.0.1:port
	Addr      string // 127.0.0.1:port
	Region    string // region clients sign for: us-east-1
	AccessKey string // fixed dummy credentials (moto accepts any)
	SecretKey string
	Dir       string // moto.log
	PID       int

	proc *proc
}

// motoCandidates are where moto_server may be when it is not on PATH:
// pyenv's shim and the bin/ of each pyenv Python, pip's --user and
// system-wide script directories.
func motoCandidates() []string {
	root := os.Getenv("PYENV_ROOT")
	if root == "" {
		if home, err := os.UserHomeDir(); err == nil {
			root = filepath.Join(home, ".pyenv")
		}
	}
	var c []string
	if root != "" {
		c = append(c, filepath.Join(root, "shims", "moto_server"))
		if m, _ := filepath.Glob(filepath.Join(root, "versions", "*", "bin", "moto_server")); len(m) > 0 {
			c = append(c, m...)
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		c = append(c, filepath.Join(home, ".local", "bin", "moto_server"))
	}
	return append(c, "/usr/local/bin/moto_server", "/usr/bin/moto_server")
}

// StartMoto starts `moto_server -H 127.0.0.1 -p P` on a free port, waits
// until it answers, and registers a t.Cleanup that stops it by PID and
// waits. It skips or fails through NeedBinary when moto_server is missing.
func StartMoto(t T) *Moto {
	t.Helper()
	bin := NeedBinary(t, "moto_server", motoCandidates()...)
	dir := serverDir(t, "moto")
	logFile := filepath.Join(dir, "moto.log")
	m := &Moto{Region: "us-east-1", AccessKey: "popconntest", SecretKey: "popconntestsecret", Dir: dir}
	p := startRetrying(t, "moto", 1, []string{logFile}, func(ports []int) (*proc, error) {
		port := strconv.Itoa(ports[0])
		m.Addr = net.JoinHostPort("127.0.0.1", port)
		m.Endpoint = "http://" + m.Addr
		p, err := startProc("moto_server", bin, []string{"-H", "127.0.0.1", "-p", port}, logFile, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		return p, m.waitReady(p, 60*time.Second)
	})
	m.proc, m.PID = p, p.pid()
	t.Cleanup(func() { m.Stop(t) })
	return m
}

// waitReady polls GET /moto-api/data.json (moto's state dump, small when
// empty) until it answers 200, the process exits or timeout passes.
func (m *Moto) waitReady(p *proc, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errProcExited
		}
		resp, err := client.Get(m.Endpoint + "/moto-api/data.json")
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("testenv: %s did not answer within %v: %w", m.Endpoint, timeout, lastErr)
}

// SQSClient returns an SQS client for this instance: Endpoint, Region, the
// dummy credentials, no proxy. optFns adjust the options after those are
// set (a test's HTTPClient, Retryer, ...).
func (m *Moto) SQSClient(t T, optFns ...func(*sqs.Options)) *sqs.Client {
	t.Helper()
	if m == nil || m.Endpoint == "" {
		t.Fatalf("testenv: SQSClient of a moto that did not start")
	}
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	opts := sqs.Options{
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
	}
	return sqs.New(opts, optFns...)
}

// Reset empties all of moto's state (POST /moto-api/reset).
func (m *Moto) Reset(t T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Endpoint+"/moto-api/reset", nil)
	if err != nil {
		t.Fatalf("testenv: moto reset: %v", err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("testenv: moto reset: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Fatalf("testenv: moto reset answered %s: %q", resp.Status, body)
	}
}

// Stop stops moto now (SIGTERM, SIGKILL to its process group after 10 s)
// and waits for it to exit. It is idempotent and also runs from t.Cleanup.
func (m *Moto) Stop(t T) {
	t.Helper()
	if m.proc == nil {
		return
	}
	if err := m.proc.stop(10 * time.Second); err != nil {
		t.Errorf("%v%s", err, m.LogTail(20))
	}
}

// LogTail returns the last n lines of moto's output (one line per request).
func (m *Moto) LogTail(n int) string {
	return logTail(n, filepath.Join(m.Dir, "moto.log"))
}
