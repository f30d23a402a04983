package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"

	"github.com/popconnector/popconnector/internal/cli"
)

// popconnPprofMain is `bench popconn-pprof --cpuprofile FILE -- ARGS`: the
// popconn command line (the same cli.Main that cmd/popconn calls) run in
// this process under the Go CPU profiler, because popconn itself has no
// profiling flag. With --trace it also records an execution trace, whose
// blocking profiles show where popconn waits rather than computes.
func popconnPprofMain(args []string) int {
	fs := flag.NewFlagSet("bench popconn-pprof", flag.ContinueOnError)
	cpu := fs.String("cpuprofile", "", "write a CPU profile here")
	traceFile := fs.String("trace", "", "also write a runtime/trace execution trace here (for where it waits: go tool trace -pprof=syscall|net|sync)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpu == "" {
		fmt.Fprintln(os.Stderr, "bench popconn-pprof: --cpuprofile is required")
		return 2
	}
	f, err := os.Create(*cpu)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench popconn-pprof: %v\n", err)
		return 1
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "bench popconn-pprof: %v\n", err)
		return 1
	}
	if *traceFile != "" {
		tf, err := os.Create(*traceFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench popconn-pprof: %v\n", err)
			return 1
		}
		defer tf.Close()
		if err := trace.Start(tf); err != nil {
			fmt.Fprintf(os.Stderr, "bench popconn-pprof: %v\n", err)
			return 1
		}
		defer trace.Stop()
	}
	code := cli.Main(fs.Args(), os.Stdout, os.Stderr)
	pprof.StopCPUProfile()
	return code
}
