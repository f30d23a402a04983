// Command reliability runs the connector's reliability scenarios
// (package internal/reliability) outside `go test`, at their long size by
// default, and prints one table row per scenario: runs, messages, lost,
// deleted-undelivered, duplicates, archive and relay mismatches, outcome.
// It starts the real servers it needs on loopback and stops them by PID.
//
//	go run ./infra/reliability --popconn bin/popconn [--short] [--seed N] [--run REGEXP]
//
// Exit status: 0 when every scenario kept the invariants and its own
// expectations, 1 otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/reliability"
)

func main() {
	popconn := flag.String("popconn", "bin/popconn", "the popconn binary for the process scenarios")
	short := flag.Bool("short", false, "run the short (go test) sizes")
	seed := flag.Int64("seed", 0, "seed for the random scenarios (0: from the clock)")
	run := flag.String("run", "", "run only scenarios whose name matches this regular expression")
	verbose := flag.Bool("v", false, "print every scenario's log")
	flag.Parse()

	o := reliability.LongOptions()
	if *short {
		o = reliability.ShortOptions()
	}
	o.Popconn = *popconn
	o.Seed = *seed
	if o.Seed == 0 {
		o.Seed = time.Now().UnixNano()
	}
	var filter *regexp.Regexp
	if *run != "" {
		filter = regexp.MustCompile(*run)
	}
	size := "long"
	if *short {
		size = "short"
	}
	fmt.Printf("reliability (%s): seed %d, ledger %s, popconn %s\n\n", size, o.Seed, o.Ledger.Name, o.Popconn)

	var rows []reliability.Row
	failed := false
	for _, g := range reliability.Groups() {
		for _, c := range g.Cases {
			if filter != nil && !filter.MatchString(c.Name) {
				continue
			}
			start := time.Now()
			row, h := runCase(c, &o)
			if h.skipped {
				fmt.Printf("%-40s skipped: %s\n", c.Name, h.skipReason)
				continue
			}
			row.Failures = append(row.Failures, h.errors...)
			row.Failures = append(row.Failures, reliability.InvariantErrors(row)...)
			rows = append(rows, row)
			fmt.Printf("%-40s %-24s %s\n", c.Name, row.Outcome(), time.Since(start).Round(time.Millisecond))
			if row.Outcome() != "ok" {
				failed = true
				for _, f := range row.Failures {
					fmt.Printf("    %s\n", strings.ReplaceAll(f, "\n", "\n    "))
				}
			}
			for _, n := range row.Notes {
				fmt.Printf("    note: %s\n", n)
			}
			if *verbose || row.Outcome() != "ok" {
				for _, l := range h.logs {
					fmt.Printf("    log: %s\n", strings.ReplaceAll(l, "\n", "\n         "))
				}
			}
		}
	}
	fmt.Println()
	reliability.WriteTable(os.Stdout, rows)
	if failed {
		os.Exit(1)
	}
}

// runCase runs one scenario with its own harness T, recovering the
// panic that carries a Fatal or Skip, and runs its cleanups.
func runCase(c reliability.Case, o *reliability.Options) (row reliability.Row, h *harnessT) {
	h = &harnessT{name: c.Name}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	done := make(chan struct{})
	// A scenario runs in its own goroutine, as under go test, so that
	// FailNow can end it with runtime.Goexit.
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				h.Errorf("panic: %v\n%s", p, debug.Stack())
			}
		}()
		row = c.Run(h, o)
		row.Scenario = c.Name
	}()
	<-done
	h.cancel()
	h.cleanup()
	if row.Scenario == "" {
		row.Scenario = c.Name
	}
	return row, h
}

// harnessT implements testing.TB for one scenario outside go test. Fatal
// and Skip end the scenario's goroutine with runtime.Goexit, as testing
// does; the embedded interface is never called (it only supplies the
// private method), every method a scenario may use is defined here.
type harnessT struct {
	testing.TB
	name       string
	mu         sync.Mutex
	errors     []string
	logs       []string
	cleanups   []func()
	skipped    bool
	skipReason string
	ctx        context.Context
	cancel     context.CancelFunc
}

func (h *harnessT) Helper()      {}
func (h *harnessT) Name() string { return h.name }
func (h *harnessT) Cleanup(f func()) {
	h.mu.Lock()
	h.cleanups = append(h.cleanups, f)
	h.mu.Unlock()
}
func (h *harnessT) cleanup() {
	for {
		h.mu.Lock()
		if len(h.cleanups) == 0 {
			h.mu.Unlock()
			return
		}
		f := h.cleanups[len(h.cleanups)-1]
		h.cleanups = h.cleanups[:len(h.cleanups)-1]
		h.mu.Unlock()
		func() {
			defer func() {
				if p := recover(); p != nil {
					h.Errorf("cleanup panicked: %v", p)
				}
			}()
			f()
		}()
	}
}
func (h *harnessT) Log(args ...any) { h.Logf("%s", fmt.Sprint(args...)) }
func (h *harnessT) Logf(format string, args ...any) {
	h.mu.Lock()
	h.logs = append(h.logs, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}
func (h *harnessT) Error(args ...any) { h.Errorf("%s", fmt.Sprint(args...)) }
func (h *harnessT) Errorf(format string, args ...any) {
	h.mu.Lock()
	h.errors = append(h.errors, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}
func (h *harnessT) Fail() { h.Errorf("failed") }
func (h *harnessT) Failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.errors) > 0
}
func (h *harnessT) FailNow()                          { h.Fail(); goexit() }
func (h *harnessT) Fatal(args ...any)                 { h.Error(args...); goexit() }
func (h *harnessT) Fatalf(format string, args ...any) { h.Errorf(format, args...); goexit() }
func (h *harnessT) Skip(args ...any)                  { h.skip(fmt.Sprint(args...)) }
func (h *harnessT) Skipf(format string, args ...any)  { h.skip(fmt.Sprintf(format, args...)) }
func (h *harnessT) SkipNow()                          { h.skip("skipped") }
func (h *harnessT) skip(reason string) {
	h.mu.Lock()
	h.skipped, h.skipReason = true, reason
	h.mu.Unlock()
	goexit()
}
func (h *harnessT) Skipped() bool            { h.mu.Lock(); defer h.mu.Unlock(); return h.skipped }
func (h *harnessT) Context() context.Context { return h.ctx }
func (h *harnessT) Setenv(key, value string) {
	prev, had := os.LookupEnv(key)
	os.Setenv(key, value)
	h.Cleanup(func() {
		if had {
			os.Setenv(key, prev)
		} else {
			os.Unsetenv(key)
		}
	})
}
func (h *harnessT) TempDir() string {
	d, err := os.MkdirTemp("", "popconn-reliability-")
	if err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func goexit() { runtime.Goexit() }
