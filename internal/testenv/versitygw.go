package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersityGWVersion is the versitygw release infra/install-deps.d/20-versitygw.sh
// installs (`go install github.com/versity/versitygw/cmd/versitygw@VERSION`
// into /usr/local/bin).
const VersityGWVersion = "v1.8.0"

// VersityGWBucket is the bucket StartVersityGW creates.
const VersityGWBucket = "popconn-archive"

// VersityGW is a running private versitygw (an S3 gateway written against
// the real S3 protocol) with its posix backend, serving HTTPS.
//
// Facts tests rely on:
//   - Endpoint is https on 127.0.0.1 with a certificate for 127.0.0.1 and
//     localhost signed by CA. TLS matters: over HTTPS the SDK sends
//     unsigned, aws-chunked bodies with trailing checksums, the framing an
//     ad-hoc fake tends to get wrong; versitygw decodes it as S3 does.
//   - AccessKey and SecretKey are random per start (the root account) and
//     reach the process through its environment, never its command line
//     or a log. Region is us-east-1. Bucket exists and is empty.
//   - Objects are files under Dir/data/<bucket>/<key>; metadata (x-amz-meta-*,
//     checksums, ETags) lives in the sidecar directory Dir/meta, so the
//     backend works on any filesystem, with or without user xattrs.
//   - versitygw accepts and ignores server-side encryption headers: it
//     stores plaintext and echoes no x-amz-server-side-encryption.
//   - Multipart uploads in progress are listed by ListMultipartUploads;
//     AbortMultipartUpload removes their parts.
type VersityGW struct {
	Endpoint  string // https://127.0.0.1:port
	Addr      string // 127.0.0.1:port
	AccessKey string
	SecretKey string
	Region    string
	Bucket    string
	CA        *CA    // signed the server certificate (localhost, 127.0.0.1)
	Dir       string // data/ (objects), meta/ (sidecar), versitygw.log
	PID       int

	proc *proc
}

// versityGWCandidates are where `go install` may have put versitygw when
// it is not on PATH.
func versityGWCandidates() []string { return goInstallCandidates("versitygw") }

// goInstallCandidates are where an installer of infra/install-deps.d or a
// developer's `go install` may have put the command name when it is not on
// PATH: /usr/local/bin, GOBIN, and bin/ of every GOPATH entry (default
// $HOME/go/bin).
func goInstallCandidates(name string) []string {
	c := []string{"/usr/local/bin/" + name}
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		c = append(c, filepath.Join(gobin, name))
	}
	for _, p := range filepath.SplitList(build.Default.GOPATH) {
		if p != "" {
			c = append(c, filepath.Join(p, "bin", name))
		}
	}
	return c
}

// StartVersityGW starts `versitygw --port 127.0.0.1:P --cert C --key K
// posix --sidecar DIR/meta DIR/data` on a free loopback port, waits until
// it answers HTTPS verified against a new test CA, creates Bucket, and
// registers a t.Cleanup that stops it by PID and waits. It skips or fails
// through NeedBinary when versitygw is not installed.
func StartVersityGW(t T) *VersityGW {
	t.Helper()
	bin := NeedBinary(t, "versitygw", versityGWCandidates()...)
	envBin, err := exec.LookPath("env")
	if err != nil {
		t.Fatalf("testenv: env(1) not found: %v", err)
	}
	ca := NewCA(t)
	certFile, keyFile, _ := ca.Issue(t, "localhost", "127.0.0.1")
	dir := serverDir(t, "versitygw")
	for _, sub := range []string{"data", "meta"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatalf("testenv: create versitygw dir: %v", err)
		}
	}
	v := &VersityGW{
		AccessKey: "popconn" + randomHex(t, 6),
		SecretKey: randomHex(t, 20),
		Region:    "us-east-1",
		Bucket:    VersityGWBucket,
		CA:        ca,
		Dir:       dir,
	}
	logFile := filepath.Join(dir, "versitygw.log")
	p := startRetrying(t, "versitygw", 1, []string{logFile}, func(ports []int) (*proc, error) {
		v.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		v.Endpoint = "https://" + v.Addr
		// env(1) puts the root credentials into the environment and execs
		// versitygw in place, so the PID we hold is the gateway's and the
		// secret is not in its command line. The first name of each
		// variable is set: it wins over the aliases.
		args := []string{
			"ROOT_ACCESS_KEY_ID=" + v.AccessKey,
			"ROOT_SECRET_ACCESS_KEY=" + v.SecretKey,
			bin,
			"--port", v.Addr,
			"--cert", certFile,
			"--key", keyFile,
			"--region", v.Region,
			"posix",
			"--sidecar", filepath.Join(dir, "meta"),
			filepath.Join(dir, "data"),
		}
		p, err := startProc("versitygw", envBin, args, logFile, syscall.SIGTERM)
		if err != nil {
			t.Fatal(err)
		}
		return p, v.waitHTTPS(p, 30*time.Second)
	})
	v.proc, v.PID = p, p.pid()
	t.Cleanup(func() { v.Stop(t) })
	if err := v.createBucket(t); err != nil {
		t.Fatalf("testenv: versitygw did not start: %v%s", err, logTail(30, logFile))
	}
	return v
}

func randomHex(t T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// waitHTTPS sends an unsigned GET / until the gateway answers over TLS
// verified against the CA (any HTTP status: unsigned requests are refused),
// the process exits, or timeout passes.
func (v *VersityGW) waitHTTPS(p *proc, timeout time.Duration) error {
	tr := v.Transport()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errProcExited
		}
		resp, err := client.Get(v.Endpoint + "/")
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("testenv: %s did not answer within %v: %w", v.Endpoint, timeout, lastErr)
}

func (v *VersityGW) createBucket(t T) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := v.Client(t).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(v.Bucket)}); err != nil {
		return fmt.Errorf("testenv: create bucket %s: %w", v.Bucket, err)
	}
	return nil
}

// Transport returns a new HTTP transport that trusts only the gateway's CA
// and verifies its certificate. Tests wrap it (counting or failing
// RoundTrippers) and pass it to Client through s3.Options.HTTPClient.
func (v *VersityGW) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: v.CA.Pool, MinVersion: tls.VersionTLS12}
	tr.Proxy = nil // loopback only, whatever HTTPS_PROXY says
	return tr
}

// Client returns an S3 client for the gateway: path-style addressing,
// Endpoint, the root credentials, Region, and an HTTP client trusting CA.
// optFns adjust the options after those are set (a test's HTTPClient,
// RetryMaxAttempts, APIOptions, ...). Its idle connections are closed at
// cleanup.
func (v *VersityGW) Client(t T, optFns ...func(*s3.Options)) *s3.Client {
	t.Helper()
	if v == nil || v.Endpoint == "" {
		t.Fatalf("testenv: Client of a versitygw that did not start")
	}
	tr := v.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	opts := s3.Options{
		Region:       v.Region,
		BaseEndpoint: aws.String(v.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(v.AccessKey, v.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
	}
	return s3.New(opts, optFns...)
}

// Stop stops the gateway now (SIGTERM, SIGKILL to its process group after
// 10 s) and waits for it to exit. It is idempotent and also runs from
// t.Cleanup.
func (v *VersityGW) Stop(t T) {
	t.Helper()
	if v.proc == nil {
		return
	}
	if err := v.proc.stop(10 * time.Second); err != nil && !errors.Is(err, errProcExited) {
		t.Errorf("%v%s", err, v.LogTail(20))
	}
}

// LogTail returns the last n lines of the gateway's output.
func (v *VersityGW) LogTail(n int) string {
	return logTail(n, filepath.Join(v.Dir, "versitygw.log"))
}

// ObjectFiles lists the object files of the bucket on disk (paths relative
// to the bucket directory), skipping versitygw's internal directories
// (".sgwtmp" for uploads in progress and the like). Tests use it to show
// that a failed Put left no object.
func (v *VersityGW) ObjectFiles(t T) []string {
	t.Helper()
	root := filepath.Join(v.Dir, "data", v.Bucket)
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: list versitygw objects: %v", err)
	}
	return files
}
