// Command lambdaecho is the Lambda function testenv's own tests run under
// the Runtime Interface Emulator (StartLambdaRIE). Built by the tests with
// BuildLambdaBootstrap; never shipped.
//
// The event is a JSON object with "op":
//
//	echo      return the event's "payload" unchanged
//	env       return {"vars": {NAME: value, ...}} for the names in "names"
//	          ("" for unset) and "environ": every NAME=value it sees
//	context   return the request id, the function ARN and the deadline the
//	          runtime API gave ("deadline_ms", Unix milliseconds) with the
//	          time the handler started ("now_ms")
//	fail      return an error with "message"
//	panic     panic with "message"
//	sleep     sleep "ms" milliseconds (or until the context ends), then
//	          return {"slept_ms": N, "ctx_err": "..."}
//	log       print "lines" to stdout and "stderr_lines" to stderr
//	exit      exit the process with "code" without answering
//
// With LAMBDAECHO_EXIT_AT_INIT=N in its environment it prints a line to
// stderr and exits with status N before it asks for an invocation.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Op          string          `json:"op"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	Names       []string        `json:"names,omitempty"`
	Message     string          `json:"message,omitempty"`
	MS          int             `json:"ms,omitempty"`
	Lines       []string        `json:"lines,omitempty"`
	StderrLines []string        `json:"stderr_lines,omitempty"`
	Code        int             `json:"code,omitempty"`
}

func handle(ctx context.Context, ev event) (any, error) {
	now := time.Now()
	switch ev.Op {
	case "echo":
		return ev.Payload, nil
	case "env":
		vars := map[string]string{}
		for _, n := range ev.Names {
			vars[n] = os.Getenv(n)
		}
		return map[string]any{"vars": vars, "environ": os.Environ()}, nil
	case "context":
		out := map[string]any{"now_ms": now.UnixMilli()}
		if lc, ok := lambdacontext.FromContext(ctx); ok {
			out["request_id"] = lc.AwsRequestID
			out["function_arn"] = lc.InvokedFunctionArn
		}
		if d, ok := ctx.Deadline(); ok {
			out["deadline_ms"] = d.UnixMilli()
		}
		return out, nil
	case "fail":
		return nil, errors.New(ev.Message)
	case "panic":
		panic(ev.Message)
	case "sleep":
		t := time.NewTimer(time.Duration(ev.MS) * time.Millisecond)
		defer t.Stop()
		out := map[string]any{}
		select {
		case <-t.C:
		case <-ctx.Done():
			out["ctx_err"] = ctx.Err().Error()
		}
		out["slept_ms"] = time.Since(now).Milliseconds()
		return out, nil
	case "log":
		for _, l := range ev.Lines {
			fmt.Fprintln(os.Stdout, l)
		}
		for _, l := range ev.StderrLines {
			fmt.Fprintln(os.Stderr, l)
		}
		return map[string]int{"lines": len(ev.Lines) + len(ev.StderrLines)}, nil
	case "exit":
		os.Exit(ev.Code)
	}
	return nil, fmt.Errorf("unknown op %q (want %s)", ev.Op, strings.Join([]string{"echo", "env", "context", "fail", "panic", "sleep", "log", "exit"}, ", "))
}

func main() {
	if c := os.Getenv("LAMBDAECHO_EXIT_AT_INIT"); c != "" {
		code, err := strconv.Atoi(c)
		if err != nil {
			code = 1
		}
		fmt.Fprintln(os.Stderr, "lambdaecho: exit at init as asked")
		os.Exit(code)
	}
	lambda.Start(handle)
}
