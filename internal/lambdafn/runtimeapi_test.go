package lambdafn_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runtimeAPI is a test double of the Lambda Runtime API
// (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html), the
// HTTP interface the Lambda service offers a custom runtime: the function
// process long-polls GET .../invocation/next for an event and posts the
// result to .../invocation/{id}/response or /error. It serves queued
// invocations in order and records the answers. No local implementation
// of this service exists, hence the double.
type runtimeAPI struct {
	Addr string

	mu        sync.Mutex
	queue     chan invocation
	firstNext time.Time // when the first GET /next arrived
	nextSeen  chan struct{}
	answers   map[string]chan answer
	initErr   []byte
}

type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
}

type answer struct {
	errorType string // "" for /response
	body      []byte
}

func startRuntimeAPI(t testing.TB) *runtimeAPI {
	t.Helper()
	a := &runtimeAPI{queue: make(chan invocation, 16), nextSeen: make(chan struct{}), answers: map[string]chan answer{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.Addr = l.Addr().String()
	srv := &http.Server{Handler: a}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a
}

const runtimePrefix = "/2018-06-01/runtime/"

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, runtimePrefix)
	switch {
	case r.Method == http.MethodGet && path == "invocation/next":
		a.mu.Lock()
		if a.firstNext.IsZero() {
			a.firstNext = time.Now()
			close(a.nextSeen)
		}
		a.mu.Unlock()
		select {
		case inv := <-a.queue:
			h := w.Header()
			h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
			h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
			h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:popconn-poller")
			h.Set("Lambda-Runtime-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0")
			h.Set("Content-Type", "application/json")
			w.Write(inv.payload)
		case <-r.Context().Done():
		}
	case r.Method == http.MethodPost && path == "init/error":
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.initErr = body
		a.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPost && strings.HasPrefix(path, "invocation/"):
		rest := strings.TrimPrefix(path, "invocation/")
		id, kind, ok := strings.Cut(rest, "/")
		body, _ := io.ReadAll(r.Body)
		if !ok || (kind != "response" && kind != "error") {
			http.Error(w, "unknown path", http.StatusNotFound)
			return
		}
		ans := answer{body: body}
		if kind == "error" {
			ans.errorType = r.Header.Get("Lambda-Runtime-Function-Error-Type")
			if ans.errorType == "" {
				ans.errorType = "error"
			}
		}
		a.answerChan(id) <- ans
		w.WriteHeader(http.StatusAccepted)
	default:
		http.Error(w, "unknown path", http.StatusNotFound)
	}
}

func (a *runtimeAPI) answerChan(id string) chan answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.answers[id]
	if !ok {
		c = make(chan answer, 1)
		a.answers[id] = c
	}
	return c
}

// invoke queues an event and waits for the function's answer.
func (a *runtimeAPI) invoke(t testing.TB, id string, payload []byte, timeout time.Duration) answer {
	t.Helper()
	a.queue <- invocation{id: id, payload: payload, deadline: time.Now().Add(timeout)}
	select {
	case ans := <-a.answerChan(id):
		return ans
	case <-time.After(timeout + 30*time.Second):
		t.Fatalf("no answer to invocation %s", id)
		return answer{}
	}
}

// buildBootstrap builds functions/poller with the flags of the release
// build for goarch and returns the binary's path.
func buildBootstrap(t testing.TB, goarch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bootstrap-"+goarch)
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags", "-s -w", "-o", out, "../../functions/poller")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build bootstrap for %s: %v\n%s", goarch, err, b)
	}
	return out
}

// function is a running bootstrap process.
type function struct {
	cmd     *exec.Cmd
	stdout  *syncBuffer
	stderr  *syncBuffer
	started time.Time
	done    chan struct{}
}

// startBootstrap execs bin with exactly env (nothing inherited) and
// registers a cleanup that kills it by PID.
func startBootstrap(t testing.TB, bin string, env []string) *function {
	t.Helper()
	f := &function{cmd: exec.Command(bin), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	f.cmd.Env = env
	f.cmd.Stdout, f.cmd.Stderr = f.stdout, f.stderr
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	f.started = time.Now()
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.cmd.Wait(); close(f.done) }()
	t.Cleanup(func() { f.stop() })
	return f
}

func (f *function) stop() {
	select {
	case <-f.done:
		return
	default:
	}
	// Lambda ends a function process with SIGKILL; so do we, by PID.
	syscall.Kill(f.cmd.Process.Pid, syscall.SIGKILL)
	<-f.done
}

// lambdaEnv is what the Lambda service sets for a function, plus the
// function's own variables, with every AWS endpoint on this machine and
// no shared AWS configuration files read.
func lambdaEnv(t testing.TB, api string, extra map[string]string) []string {
	home := t.TempDir()
	env := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          api,
		"AWS_LAMBDA_FUNCTION_NAME":        "popconn-poller",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/popconn-poller",
		"AWS_LAMBDA_LOG_STREAM_NAME":      "2026/11/22/[$LATEST]" + fmt.Sprintf("%032x", time.Now().UnixNano()),
		"LAMBDA_TASK_ROOT":                "/var/task",
		"TZ":                              ":UTC",
		"HOME":                            home,
		"AWS_CONFIG_FILE":                 filepath.Join(home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE":     filepath.Join(home, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED":       "true",
	}
	for k, v := range extra {
		env[k] = v
	}
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// functionEnv points the bootstrap at the rig's servers: S3 (versitygw,
// HTTPS with its CA through AWS_CA_BUNDLE), DynamoDB Local, and the
// scripted SSM/Secrets Manager, all through the SDK's standard
// AWS_ENDPOINT_URL_<SERVICE> variables.
func functionEnv(r *rig, configSource string) map[string]string {
	gw := r.srv.gw
	return map[string]string{
		"AWS_REGION":                       gw.Region,
		"AWS_DEFAULT_REGION":               gw.Region,
		"AWS_ACCESS_KEY_ID":                gw.AccessKey,
		"AWS_SECRET_ACCESS_KEY":            gw.SecretKey,
		"AWS_ENDPOINT_URL_S3":              gw.Endpoint,
		"AWS_ENDPOINT_URL_DYNAMODB":        r.srv.ddb.Endpoint,
		"AWS_ENDPOINT_URL_SSM":             r.srv.aws.URL,
		"AWS_ENDPOINT_URL_SECRETS_MANAGER": r.srv.aws.URL,
		"AWS_CA_BUNDLE":                    gw.CA.CertFile,
		"POPCONN_CONFIG":                   configSource,
		"POPCONN_ARCHIVE_BUCKET":           gw.Bucket,
		"POPCONN_ARCHIVE_PREFIX":           r.prefix,
		"POPCONN_LEDGER_TABLE":             r.table,
		"POPCONN_S3_PATH_STYLE":            "true",
		"POPCONN_DEADLINE_RESERVE":         "1s",
	}
}

func hostArch() string { return runtime.GOARCH }
