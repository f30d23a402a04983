package testenv

// The Lambda Runtime Interface Emulator (RIE) runs a function's bootstrap
// the way the Lambda service does: it serves the Runtime API the bootstrap
// polls and turns each HTTP POST to its invoke endpoint into one
// invocation. Facts about the pinned version (LambdaRIEVersion) this file
// relies on, read from its source and checked by lambdarie_test.go:
//
//   - Flags: --runtime-interface-emulator-address HOST:PORT is the invoke
//     endpoint (default 0.0.0.0:8080), --runtime-api-address HOST:PORT the
//     Runtime API (default 127.0.0.1:9001: fixed, so two RIEs collide unless
//     it is set), --log-level. The first argument that is not a flag is the
//     bootstrap, run with the RIE's working directory as its own. Setting
//     AWS_LAMBDA_MAX_CONCURRENCY switches the binary to a different
//     emulator (Lambda Managed Instances), which this helper refuses.
//   - The bootstrap's environment is the RIE's whole environment plus
//     AWS_LAMBDA_RUNTIME_API, AWS_LAMBDA_METADATA_API/_TOKEN,
//     _X_AMZN_TRACE_ID, and defaults for AWS_LAMBDA_FUNCTION_NAME
//     (test_function), _VERSION ($LATEST), _MEMORY_SIZE (3008),
//     AWS_LAMBDA_LOG_GROUP_NAME and _LOG_STREAM_NAME. It sets
//     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN to ""
//     when they are not given, and never sets AWS_REGION.
//   - The bootstrap starts lazily, at the first invocation (the REPORT line
//     says "Init Duration"), not when the RIE starts.
//   - AWS_LAMBDA_FUNCTION_TIMEOUT (whole seconds, default 300) is the
//     function timeout; the bootstrap's Lambda-Runtime-Deadline-Ms (the
//     handler's context deadline in aws-lambda-go) is the time of the
//     invocation plus that timeout. At the timeout the RIE SIGKILLs the
//     runtime and answers 200 with the plain text "Task timed out after
//     N.00 seconds"; the next invocation starts a new runtime (cold start).
//   - A request id comes from the X-Amzn-RequestId request header, or is a
//     new UUID; the function ARN is
//     arn:aws:lambda:us-east-1:012345678912:function:<name>.
//   - The answer carries no X-Amz-Function-Error header (the RIE drops the
//     headers the sandbox sets). A handled function error is status 200
//     with the runtime's error document {"errorMessage","errorType"[,
//     "stackTrace"]}; a runtime that exits during an invocation (also a Go
//     panic: aws-lambda-go reports it, then exits) is 502 with such a
//     document (errorType Runtime.ExitError for an exit), and the next
//     invocation starts a new runtime. So a function error is told apart
//     by the body's shape: a successful result that is itself exactly such
//     a document is indistinguishable from one.
//   - ONE invocation at a time: a second request while one is in flight
//     makes this RIE version dereference nil and crash (the first one's
//     runtime is orphaned). Invoke therefore serializes, and holds the slot
//     until the RIE has answered even when the caller's context ends first.
//     For concurrency start several RIEs.
//   - Output: the bootstrap's stdout and stderr both go to the RIE's
//     stdout, between the RIE's own "START RequestId: ...", "END
//     RequestId: ..." and "REPORT RequestId: ..." lines; the RIE logs to
//     its stderr ("... [INFO] (rapid) ...").
//   - The runtime runs in a process group of its own (not the RIE's). On
//     SIGTERM the RIE ends the runtime and exits; Stop also kills the
//     runtime's group itself in case the RIE did not.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// LambdaRIEVersion is the emulator infra/install-deps.d/40-lambda-rie.sh
// installs (`go install
// github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@VERSION`
// into /usr/local/bin).
const LambdaRIEVersion = "v0.0.0-20261030222936-bef5c4ba774d"

// LambdaInvokePath is the RIE's invoke endpoint, the path of the Lambda
// Invoke API for the one function it runs.
const LambdaInvokePath = "/2015-03-31/functions/function/invocations"

// DefaultLambdaTimeout is the function timeout when
// LambdaRIEOptions.Timeout is zero.
const DefaultLambdaTimeout = 30 * time.Second

// LambdaRIEOptions configures StartLambdaRIE.
type LambdaRIEOptions struct {
	// Bootstrap is the function's executable (required), built for this
	// machine (GOOS=linux, this GOARCH, CGO_ENABLED=0, -tags lambda.norpc),
	// for instance by BuildLambdaBootstrap. Its directory is the
	// function's working directory and LAMBDA_TASK_ROOT.
	Bootstrap string

	// Env is the function's environment: everything the function is
	// configured by (AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
	// AWS_ENDPOINT_URL_S3/_DYNAMODB/_SQS, AWS_CA_BUNDLE, POPCONN_*, ...).
	// Nothing of the test's own environment is passed on. On top of Env
	// come only AWS_LAMBDA_FUNCTION_TIMEOUT (from Timeout; Env must not set
	// it), what the RIE itself adds (see the file comment), and these
	// isolation defaults, each unless Env sets it:
	//
	//	HOME=<Dir>/home  AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE
	//	  pointing at absent files there (no shared AWS configuration)
	//	AWS_EC2_METADATA_DISABLED=true (the SDK never asks IMDS)
	//	TMPDIR=<Dir>/tmp (the function's /tmp, removed with Dir)
	//	TZ=:UTC  LAMBDA_TASK_ROOT=<directory of Bootstrap>
	//
	// LambdaBaseEnv gives fake credentials and a region to start from.
	Env map[string]string

	// Timeout is the function timeout. The RIE counts whole seconds, so it
	// is rounded up to one; zero means DefaultLambdaTimeout.
	Timeout time.Duration
}

// LambdaBaseEnv returns a fresh map with what every function needs to
// build AWS clients without touching anything outside this machine: fake
// static credentials and region us-east-1 (AWS_REGION and
// AWS_DEFAULT_REGION). Tests add endpoints and POPCONN_* variables.
func LambdaBaseEnv() map[string]string {
	return map[string]string{
		"AWS_REGION":            "us-east-1",
		"AWS_DEFAULT_REGION":    "us-east-1",
		"AWS_ACCESS_KEY_ID":     "popconntest",
		"AWS_SECRET_ACCESS_KEY": "popconntestsecret",
	}
}

// LambdaRIE is a running Runtime Interface Emulator with one function.
type LambdaRIE struct {
	Endpoint   string        // http://127.0.0.1:port, the invoke API
	Addr       string        // 127.0.0.1:port of Endpoint
	RuntimeAPI string        // 127.0.0.1:port, the bootstrap's AWS_LAMBDA_RUNTIME_API
	Timeout    time.Duration // the function timeout as the RIE applies it
	Dir        string        // home/, tmp/, function.log (RIE stdout), rie.log (RIE stderr)
	PID        int           // the aws-lambda-rie process

	proc    *proc
	slot    chan struct{} // one invocation at a time
	client  *http.Client
	closeTr func()
}

// FunctionError is an invocation the function did not answer with a
// result: the handler returned an error, the runtime exited or panicked,
// or the function timed out. Invoke returns it with the answer's body.
type FunctionError struct {
	Type       string // errorType: the handler's error type, "Runtime.ExitError", "Sandbox.Timedout", ...
	Message    string // errorMessage, or the RIE's timeout text
	StatusCode int    // the RIE's HTTP status: 200 for a handled error or a timeout, 502 for a runtime that exited
	Timeout    bool   // the function ran into its timeout (the RIE killed the runtime)
	Body       []byte // the answer as the RIE sent it
}

func (e *FunctionError) Error() string {
	return fmt.Sprintf("lambda function error (HTTP %d): %s: %s", e.StatusCode, e.Type, e.Message)
}

// ErrLambdaRIEExited is returned by Invoke when the emulator process is
// gone.
var ErrLambdaRIEExited = errors.New("testenv: the lambda RIE process has exited")

// lambdaRIECandidates are where `go install` may have put aws-lambda-rie
// when it is not on PATH.
func lambdaRIECandidates() []string { return goInstallCandidates("aws-lambda-rie") }

// StartLambdaRIE starts `aws-lambda-rie --log-level info
// --runtime-interface-emulator-address 127.0.0.1:P --runtime-api-address
// 127.0.0.1:Q BOOTSTRAP` on two free loopback ports, with exactly the
// environment opts describe, waits until the invoke endpoint accepts
// connections (the bootstrap itself starts at the first Invoke), and
// registers a t.Cleanup that stops it by PID, kills the runtime's process
// group and waits; when the test failed it logs the tail of the function's
// output. It skips or fails through NeedBinary when aws-lambda-rie is not
// installed.
func StartLambdaRIE(t T, opts LambdaRIEOptions) *LambdaRIE {
	t.Helper()
	bin := NeedBinary(t, "aws-lambda-rie", lambdaRIECandidates()...)
	if opts.Bootstrap == "" {
		t.Fatalf("testenv: StartLambdaRIE needs LambdaRIEOptions.Bootstrap")
	}
	bootstrap, err := filepath.Abs(opts.Bootstrap)
	if err != nil {
		t.Fatalf("testenv: bootstrap path: %v", err)
	}
	if fi, err := os.Stat(bootstrap); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("testenv: bootstrap %s is not an executable file (%v)", bootstrap, err)
	}
	for _, k := range []string{"AWS_LAMBDA_FUNCTION_TIMEOUT", "AWS_LAMBDA_MAX_CONCURRENCY"} {
		if _, ok := opts.Env[k]; ok {
			t.Fatalf("testenv: LambdaRIEOptions.Env must not set %s (use Timeout; the RIE runs one invocation at a time)", k)
		}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultLambdaTimeout
	}
	secs := int64((timeout + time.Second - 1) / time.Second)

	dir := serverDir(t, "lambda-rie")
	home, tmp := filepath.Join(dir, "home"), filepath.Join(dir, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("testenv: create lambda RIE dir: %v", err)
		}
	}
	taskRoot := filepath.Dir(bootstrap)
	env := map[string]string{
		"HOME":                        home,
		"AWS_CONFIG_FILE":             filepath.Join(home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(home, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"TMPDIR":                      tmp,
		"TZ":                          ":UTC",
		"LAMBDA_TASK_ROOT":            taskRoot,
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	env["AWS_LAMBDA_FUNCTION_TIMEOUT"] = strconv.FormatInt(secs, 10)
	environ := make([]string, 0, len(env))
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	sort.Strings(environ)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // loopback only, whatever HTTP_PROXY says
	r := &LambdaRIE{
		Timeout: time.Duration(secs) * time.Second,
		Dir:     dir,
		slot:    make(chan struct{}, 1),
		client:  &http.Client{Transport: tr},
		closeTr: tr.CloseIdleConnections,
	}
	funcLog, rieLog := r.logFiles()
	p := startRetrying(t, "lambda RIE", 2, []string{funcLog, rieLog}, func(ports []int) (*proc, error) {
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		r.RuntimeAPI = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		r.Endpoint = "http://" + r.Addr
		args := []string{
			"--log-level", "info",
			"--runtime-interface-emulator-address", r.Addr,
			"--runtime-api-address", r.RuntimeAPI,
			bootstrap,
		}
		p, err := startProcIO("aws-lambda-rie", bin, args, procIO{env: environ, stdout: funcLog, stderr: rieLog, dir: taskRoot}, syscall.SIGKILL)
		if err != nil {
			t.Fatal(err)
		}
		return p, waitListening(r.Addr, p, 30*time.Second)
	})
	r.proc, r.PID = p, p.pid()
	t.Cleanup(func() {
		if failed, ok := t.(interface{ Failed() bool }); ok && failed.Failed() {
			t.Logf("testenv: lambda RIE %s, function output:%s", r.Endpoint, r.LogTail(40))
		}
		r.Stop(t)
	})
	return r
}

// waitListening dials addr until it accepts a connection, the process
// exits or timeout passes.
func waitListening(addr string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			return errProcExited
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			if p.exited() {
				return errProcExited
			}
			return nil
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testenv: %s did not accept connections within %v: %w", addr, timeout, lastErr)
}

func (r *LambdaRIE) logFiles() (function, rie string) {
	return filepath.Join(r.Dir, "function.log"), filepath.Join(r.Dir, "rie.log")
}

// Invoke sends payload as one invocation and returns the function's
// answer. A function error (handled error, runtime exit or panic, timeout;
// see the file comment for how they are told apart) comes back as a
// *FunctionError together with the body. Invocations are serialized: a
// call waits (within ctx) while another is in flight. When ctx ends first
// Invoke returns ctx.Err(), but the invocation goes on in the RIE and the
// next one waits for it.
func (r *LambdaRIE) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	return r.InvokeWithRequestID(ctx, "", payload)
}

// InvokeWithRequestID is Invoke with the request id the function sees
// (X-Amzn-RequestId; "" lets the RIE pick a UUID), which also names the
// invocation's START/END/REPORT lines in Logs.
func (r *LambdaRIE) InvokeWithRequestID(ctx context.Context, requestID string, payload []byte) ([]byte, error) {
	if r == nil || r.proc == nil {
		return nil, errors.New("testenv: Invoke on a lambda RIE that did not start")
	}
	select {
	case r.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.proc.done:
		return nil, ErrLambdaRIEExited
	}
	type answer struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		// Bounded by the RIE's own limits: an init and an invocation, each
		// at most the function timeout.
		reqCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*r.Timeout+30*time.Second)
		defer cancel()
		defer func() { <-r.slot }()
		status, body, err := r.post(reqCtx, requestID, payload)
		done <- answer{status, body, err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			// A connection the RIE dropped: was it exiting?
			select {
			case <-r.proc.done:
				return nil, fmt.Errorf("%w: %v%s", ErrLambdaRIEExited, a.err, r.LogTail(20))
			case <-time.After(time.Second):
				return nil, a.err
			}
		}
		return a.body, classifyLambdaAnswer(a.status, a.body)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *LambdaRIE) post(ctx context.Context, requestID string, payload []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Endpoint+LambdaInvokePath, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if requestID != "" {
		req.Header.Set("X-Amzn-RequestId", requestID)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("testenv: invoke %s: %w", r.Endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("testenv: invoke %s: read answer: %w", r.Endpoint, err)
	}
	return resp.StatusCode, body, nil
}

// lambdaTimeoutPrefix starts the RIE's answer to a timed-out invocation.
const lambdaTimeoutPrefix = "Task timed out after "

// classifyLambdaAnswer turns the RIE's answer into nil (a result), a
// *FunctionError, or another error (the RIE refused the request).
func classifyLambdaAnswer(status int, body []byte) error {
	if status == http.StatusOK && bytes.HasPrefix(body, []byte(lambdaTimeoutPrefix)) {
		return &FunctionError{Type: "Sandbox.Timedout", Message: string(body), StatusCode: status, Timeout: true, Body: body}
	}
	if typ, msg, ok := lambdaErrorDocument(body); ok && (status == http.StatusOK || status == http.StatusBadGateway) {
		return &FunctionError{Type: typ, Message: msg, StatusCode: status, Body: body}
	}
	if status == http.StatusOK {
		return nil
	}
	if status == http.StatusBadGateway {
		// A runtime that exits during init: the RIE answers 502 with an
		// empty body (its own log says "Sandbox.Failure").
		return &FunctionError{Type: "Sandbox.Failure", Message: fmt.Sprintf("the runtime failed without an error document (body %q); see EmulatorLog", truncate(body, 512)), StatusCode: status, Body: body}
	}
	return fmt.Errorf("testenv: lambda RIE answered HTTP %d: %q", status, truncate(body, 512))
}

// lambdaErrorDocument reports whether body is exactly a runtime error
// document: a JSON object with string errorType and errorMessage and no
// other member than stackTrace.
func lambdaErrorDocument(body []byte) (typ, msg string, ok bool) {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return "", "", false
	}
	for k := range doc {
		if k != "errorType" && k != "errorMessage" && k != "stackTrace" {
			return "", "", false
		}
	}
	if json.Unmarshal(doc["errorType"], &typ) != nil || json.Unmarshal(doc["errorMessage"], &msg) != nil {
		return "", "", false
	}
	return typ, msg, true
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// Logs returns what the RIE wrote to its stdout so far: the function's
// stdout and stderr (log lines, EMF documents) between the RIE's START,
// END and REPORT lines.
func (r *LambdaRIE) Logs() []byte {
	f, _ := r.logFiles()
	data, _ := os.ReadFile(f)
	return data
}

// FunctionLogs returns Logs without the RIE's "START RequestId: ", "END
// RequestId: " and "REPORT RequestId: " lines: only what the function
// printed.
func (r *LambdaRIE) FunctionLogs() []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(r.Logs()))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("START RequestId: ")) || bytes.HasPrefix(line, []byte("END RequestId: ")) || bytes.HasPrefix(line, []byte("REPORT RequestId: ")) {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// EmulatorLog returns the RIE's own log (its stderr): init, invoke, reset
// and runtime exit events.
func (r *LambdaRIE) EmulatorLog() []byte {
	_, f := r.logFiles()
	data, _ := os.ReadFile(f)
	return data
}

// LogTail returns the last n lines of the function's output and of the
// RIE's own log.
func (r *LambdaRIE) LogTail(n int) string {
	funcLog, rieLog := r.logFiles()
	return logTail(n, funcLog, rieLog)
}

// RuntimePIDs lists the live processes the RIE started (the bootstrap, at
// most one at a time once it has started).
func (r *LambdaRIE) RuntimePIDs() []int {
	if r == nil || r.proc == nil || r.proc.exited() {
		return nil
	}
	return childPIDs(r.PID)
}

// Stop ends the RIE now: SIGTERM (it ends the runtime and exits), SIGKILL
// to its process group after 10 s, then SIGKILL to the process group of
// every runtime it had started, and waits until they are gone. It is
// idempotent and also runs from t.Cleanup.
func (r *LambdaRIE) Stop(t T) {
	t.Helper()
	if r.proc == nil {
		return
	}
	runtimes := r.RuntimePIDs()
	if err := r.proc.stop(10 * time.Second); err != nil {
		t.Errorf("%v%s", err, r.LogTail(20))
	}
	// The runtime was started with a process group of its own (its PID).
	for _, pid := range runtimes {
		if !waitGroupGone(pid, 2*time.Second) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			if !waitGroupGone(pid, 5*time.Second) {
				t.Errorf("testenv: lambda runtime process group %d still alive after SIGKILL", pid)
			}
		}
	}
	r.closeTr()
}

// childPIDs lists the live (non-zombie) processes whose parent is ppid.
func childPIDs(ppid int) []int {
	var pids []int
	liveProcs(func(pid, parent, _ int) bool {
		if parent == ppid {
			pids = append(pids, pid)
		}
		return true
	})
	return pids
}

// BuildLambdaBootstrap builds the main package pkg (an import path, or a
// directory relative to the test's working directory such as
// "./testdata/lambdaecho") the way the release build does, but for this
// machine: GOOS=linux, GOARCH of this process, CGO_ENABLED=0, -tags
// lambda.norpc, -trimpath. It returns the path of the binary, named
// bootstrap, in a directory of its own under t.TempDir().
func BuildLambdaBootstrap(t T, pkg string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dir, err := os.MkdirTemp(t.TempDir(), "task-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	out := filepath.Join(dir, "bootstrap")
	cmd := exec.Command(goBin, "build", "-tags", "lambda.norpc", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: build bootstrap %s: %v\n%s", pkg, err, b)
	}
	return out
}
