package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lambdaEcho builds testdata/lambdaecho once per test.
func lambdaEcho(t *testing.T) string {
	t.Helper()
	NeedBinary(t, "aws-lambda-rie", lambdaRIECandidates()...)
	return BuildLambdaBootstrap(t, "./testdata/lambdaecho")
}

func invokeJSON(t *testing.T, r *LambdaRIE, ev any, out any) error {
	t.Helper()
	payload, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, err := r.Invoke(ctx, payload)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
	}
	return nil
}

func wantFunctionError(t *testing.T, err error, status int, typ string) *FunctionError {
	t.Helper()
	var fe *FunctionError
	if !errors.As(err, &fe) {
		t.Fatalf("got error %v, want a *FunctionError", err)
	}
	if fe.StatusCode != status || (typ != "" && fe.Type != typ) {
		t.Fatalf("function error %+v (body %q), want HTTP %d type %q", fe, fe.Body, status, typ)
	}
	return fe
}

func TestLambdaRIE(t *testing.T) {
	bootstrap := lambdaEcho(t)
	t.Setenv("POPCONN_TESTENV_NOT_PASSED", "leak")
	env := LambdaBaseEnv()
	env["POPCONN_CONFIG"] = "inline:{}"
	r := StartLambdaRIE(t, LambdaRIEOptions{Bootstrap: bootstrap, Env: env, Timeout: 1500 * time.Millisecond})
	if r.Timeout != 2*time.Second {
		t.Fatalf("Timeout %v, want 1.5 s rounded up to 2 s", r.Timeout)
	}

	t.Run("Echo", func(t *testing.T) {
		ctx := context.Background()
		body, err := r.Invoke(ctx, []byte(`{"op":"echo","payload":{"a":[1,2,"x"]}}`))
		if err != nil || string(body) != `{"a":[1,2,"x"]}` {
			t.Fatalf("Invoke = %q, %v", body, err)
		}
	})

	t.Run("HandledError", func(t *testing.T) {
		err := invokeJSON(t, r, map[string]string{"op": "fail", "message": "boom"}, nil)
		fe := wantFunctionError(t, err, 200, "errorString")
		if fe.Message != "boom" || fe.Timeout {
			t.Fatalf("function error %+v", fe)
		}
	})

	t.Run("Environment", func(t *testing.T) {
		var got struct {
			Vars    map[string]string `json:"vars"`
			Environ []string          `json:"environ"`
		}
		names := []string{"POPCONN_CONFIG", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_LAMBDA_FUNCTION_TIMEOUT",
			"AWS_LAMBDA_RUNTIME_API", "AWS_EC2_METADATA_DISABLED", "HOME", "TMPDIR", "POPCONN_TESTENV_NOT_PASSED", "PATH"}
		if err := invokeJSON(t, r, map[string]any{"op": "env", "names": names}, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"POPCONN_CONFIG":              "inline:{}",
			"AWS_REGION":                  "us-east-1",
			"AWS_ACCESS_KEY_ID":           "popconntest",
			"AWS_LAMBDA_FUNCTION_TIMEOUT": "2",
			"AWS_LAMBDA_RUNTIME_API":      r.RuntimeAPI,
			"AWS_EC2_METADATA_DISABLED":   "true",
			"HOME":                        r.Dir + "/home",
			"TMPDIR":                      r.Dir + "/tmp",
			"POPCONN_TESTENV_NOT_PASSED":  "",
			"PATH":                        "",
		}
		for k, v := range want {
			if got.Vars[k] != v {
				t.Errorf("%s=%q, want %q", k, got.Vars[k], v)
			}
		}
		t.Logf("function environment: %q", got.Environ)
	})

	t.Run("ContextAndDeadline", func(t *testing.T) {
		payload := []byte(`{"op":"context"}`)
		body, err := r.InvokeWithRequestID(context.Background(), "req-0001", payload)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			RequestID   string `json:"request_id"`
			FunctionARN string `json:"function_arn"`
			DeadlineMS  int64  `json:"deadline_ms"`
			NowMS       int64  `json:"now_ms"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got.RequestID != "req-0001" || !strings.HasSuffix(got.FunctionARN, ":function:test_function") {
			t.Errorf("context %+v", got)
		}
		// Lambda-Runtime-Deadline-Ms is the invocation's start plus the
		// timeout: the handler sees nearly all of it.
		left := time.Duration(got.DeadlineMS-got.NowMS) * time.Millisecond
		if left <= r.Timeout/2 || left > r.Timeout {
			t.Errorf("deadline %v after the handler started, want just under %v", left, r.Timeout)
		}
		if !bytes.Contains(r.Logs(), []byte("START RequestId: req-0001 ")) {
			t.Errorf("no START line for req-0001 in the logs:%s", r.LogTail(10))
		}
	})

	t.Run("Logs", func(t *testing.T) {
		ev := map[string]any{"op": "log", "lines": []string{`{"_aws":{"CloudWatchMetrics":[]},"n":1}`}, "stderr_lines": []string{"to stderr"}}
		if err := invokeJSON(t, r, ev, nil); err != nil {
			t.Fatal(err)
		}
		fl := r.FunctionLogs()
		for _, want := range []string{`{"_aws":{"CloudWatchMetrics":[]},"n":1}` + "\n", "to stderr\n"} {
			if !bytes.Contains(fl, []byte(want)) {
				t.Errorf("function logs lack %q:\n%s", want, fl)
			}
		}
		if bytes.Contains(fl, []byte("RequestId: ")) {
			t.Errorf("function logs keep the RIE's lines:\n%s", fl)
		}
		if !bytes.Contains(r.EmulatorLog(), []byte("INVOKE START")) {
			t.Errorf("emulator log:\n%s", r.EmulatorLog())
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		before := r.RuntimePIDs()
		start := time.Now()
		err := invokeJSON(t, r, map[string]any{"op": "sleep", "ms": 10000}, nil)
		took := time.Since(start)
		fe := wantFunctionError(t, err, 200, "Sandbox.Timedout")
		if !fe.Timeout || fe.Message != "Task timed out after 2.00 seconds" {
			t.Fatalf("function error %+v", fe)
		}
		if took < r.Timeout || took > r.Timeout+5*time.Second {
			t.Errorf("timed out after %v, want about %v", took, r.Timeout)
		}
		// The RIE killed the runtime; the next invocation starts a new one.
		if err := invokeJSON(t, r, map[string]string{"op": "echo"}, nil); err != nil {
			t.Fatal(err)
		}
		after := r.RuntimePIDs()
		if len(before) != 1 || len(after) != 1 || before[0] == after[0] {
			t.Errorf("runtime PIDs before %v and after %v the timeout, want one each, different", before, after)
		}
	})

	t.Run("PanicAndExit", func(t *testing.T) {
		err := invokeJSON(t, r, map[string]string{"op": "panic", "message": "oops"}, nil)
		if fe := wantFunctionError(t, err, 502, "string"); fe.Message != "oops" {
			t.Errorf("panic: %+v", fe)
		}
		err = invokeJSON(t, r, map[string]any{"op": "exit", "code": 3}, nil)
		if fe := wantFunctionError(t, err, 502, "Runtime.ExitError"); !strings.Contains(fe.Message, "exit status 3") {
			t.Errorf("exit: %+v", fe)
		}
		if err := invokeJSON(t, r, map[string]string{"op": "echo"}, nil); err != nil {
			t.Fatalf("after a runtime exit: %v", err)
		}
	})

	t.Run("Serialized", func(t *testing.T) {
		// Concurrent requests would crash this RIE; Invoke queues them.
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = invokeJSON(t, r, map[string]any{"op": "sleep", "ms": 300}, nil)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("invocation %d: %v", i, err)
			}
		}
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("3 invocations of 300 ms took %v: not one at a time", took)
		}
	})

	t.Run("CallerGivesUp", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := r.Invoke(ctx, []byte(`{"op":"sleep","ms":700}`)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Invoke = %v, want the context's error", err)
		}
		start := time.Now()
		if err := invokeJSON(t, r, map[string]string{"op": "echo"}, nil); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("next invocation answered after %v: it did not wait for the abandoned one", took)
		}
	})

	t.Run("Stop", func(t *testing.T) {
		runtimes := r.RuntimePIDs()
		if len(runtimes) != 1 {
			t.Fatalf("runtime PIDs %v, want one", runtimes)
		}
		r.Stop(t)
		for _, pid := range append(runtimes, r.PID) {
			if groupHasLive(pid) {
				t.Errorf("process group %d still alive after Stop", pid)
			}
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("process %d still exists after Stop", pid)
			}
		}
		if _, err := r.Invoke(context.Background(), []byte(`{"op":"echo"}`)); !errors.Is(err, ErrLambdaRIEExited) {
			t.Errorf("Invoke after Stop = %v, want ErrLambdaRIEExited", err)
		}
	})
}

// TestLambdaRIEInstances runs two RIEs at once, as the concurrency tests
// do: their ports (invoke and Runtime API) do not collide and each serves
// its own function.
func TestLambdaRIEInstances(t *testing.T) {
	bootstrap := lambdaEcho(t)
	rs := make([]*LambdaRIE, 2)
	for i := range rs {
		env := LambdaBaseEnv()
		env["INSTANCE"] = fmt.Sprint(i)
		rs[i] = StartLambdaRIE(t, LambdaRIEOptions{Bootstrap: bootstrap, Env: env, Timeout: 5 * time.Second})
	}
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct {
				Vars map[string]string `json:"vars"`
			}
			if err := invokeJSON(t, r, map[string]any{"op": "env", "names": []string{"INSTANCE"}}, &got); err != nil {
				t.Errorf("instance %d: %v", i, err)
				return
			}
			if got.Vars["INSTANCE"] != fmt.Sprint(i) {
				t.Errorf("instance %d answered INSTANCE=%q", i, got.Vars["INSTANCE"])
			}
		}()
	}
	wg.Wait()

	// Stop while an invocation runs: the RIE ends the runtime, Stop waits
	// for both, and the abandoned Invoke gets an error.
	r := rs[0]
	errc := make(chan error, 1)
	go func() { _, err := r.Invoke(context.Background(), []byte(`{"op":"sleep","ms":4000}`)); errc <- err }()
	time.Sleep(300 * time.Millisecond)
	runtimes := r.RuntimePIDs()
	start := time.Now()
	r.Stop(t)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Stop during an invocation took %v", took)
	}
	if len(runtimes) != 1 || groupHasLive(runtimes[0]) {
		t.Errorf("runtime %v not stopped", runtimes)
	}
	if err := <-errc; !errors.Is(err, ErrLambdaRIEExited) {
		t.Errorf("invocation interrupted by Stop: %v, want ErrLambdaRIEExited", err)
	}
}

// TestLambdaRIEInitFailure: a bootstrap that exits before it asks for an
// invocation is a function error of the first Invoke.
func TestLambdaRIEInitFailure(t *testing.T) {
	bootstrap := lambdaEcho(t)
	env := LambdaBaseEnv()
	env["LAMBDAECHO_EXIT_AT_INIT"] = "4"
	r := StartLambdaRIE(t, LambdaRIEOptions{Bootstrap: bootstrap, Env: env, Timeout: 5 * time.Second})
	err := invokeJSON(t, r, map[string]string{"op": "echo"}, nil)
	var fe *FunctionError
	if !errors.As(err, &fe) {
		t.Fatalf("Invoke = %v, want a *FunctionError", err)
	}
	if fe.StatusCode != 502 || fe.Type != "Sandbox.Failure" {
		t.Errorf("init failure: %+v", fe)
	}
	// The RIE tries the init again at the next invocation.
	err = invokeJSON(t, r, map[string]string{"op": "echo"}, nil)
	if !errors.As(err, &fe) || fe.Type != "Sandbox.Failure" {
		t.Errorf("second Invoke = %v, want Sandbox.Failure again", err)
	}
	if n := bytes.Count(r.FunctionLogs(), []byte("lambdaecho: exit at init as asked")); n != 2 {
		t.Errorf("%d init attempts, want 2:%s", n, r.LogTail(40))
	}
	if !bytes.Contains(r.FunctionLogs(), []byte("lambdaecho: exit at init as asked")) {
		t.Errorf("function logs:\n%s", r.FunctionLogs())
	}
}
