package reliability

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"io"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/boltledger"
)

// T is what a scenario needs from its runner: a *testing.T in go test, the
// harness's own implementation in infra/reliability.
type T = testing.TB

// Options size and parameterise the scenarios.
type Options struct {
	// Long selects the long versions (more messages, more kills, a 100 MB
	// message).
	Long bool
	// Seed drives every random choice (kill moments, fault mix). Zero
	// means a seed from the clock; the scenario logs the seed it used.
	Seed int64
	// Popconn is the popconn binary to run; "" builds one from this module.
	Popconn string
	// Ledger opens the ledger of the in-process scenarios.
	Ledger LedgerFactory
	// KillMessages and Kills size the process-kill scenario.
	KillMessages, Kills int
	// ConcurrentMessages is the mailbox size of the concurrent pollers.
	ConcurrentMessages int
	// BigMessage is the size of the largest hostile message.
	BigMessage int64
}

// ShortOptions is the `go test` size: a few minutes on two busy cores.
func ShortOptions() Options {
	return Options{Ledger: BoltLedger(), KillMessages: 60, Kills: 8, ConcurrentMessages: 30, BigMessage: 20 << 20}
}

// LongOptions is the `make reliability` size.
func LongOptions() Options {
	return Options{Long: true, Ledger: BoltLedger(), KillMessages: 500, Kills: 50, ConcurrentMessages: 200, BigMessage: 100 << 20}
}

// LedgerFactory opens the ledger that a scenario's connectors share.
type LedgerFactory struct {
	Name string
	// Open opens a ledger keeping its data under dir (which the factory may
	// ignore) and closes it from t.Cleanup. now is the scenario's clock;
	// an implementation that cannot use it for lease expiry says so with
	// HonoursClock false, and the scenarios that need it are skipped.
	Open         func(t T, dir string, now func() time.Time) ledger.Ledger
	HonoursClock bool
}

// BoltLedger is the local-mode ledger: one bbolt file in dir.
func BoltLedger() LedgerFactory {
	return LedgerFactory{
		Name:         "bolt",
		HonoursClock: true,
		Open: func(t T, dir string, now func() time.Time) ledger.Ledger {
			t.Helper()
			l, err := boltledger.Open(filepath.Join(dir, "ledger.db"), boltledger.Options{Timeout: 2 * time.Second, Now: now})
			if err != nil {
				t.Fatalf("open bolt ledger: %v", err)
			}
			t.Cleanup(func() { l.Close() })
			return l
		},
	}
}

// Row is one line of the report: what one case did and what the checker
// found.
type Row struct {
	Scenario string
	Runs     int // polls (in-process) or popconn runs (process scenarios)
	Kills    int // runs ended by SIGKILL
	Tally
	// AllowedDups is how many duplicates the case's faults may cause.
	AllowedDups int
	// Notes say what the case saw beyond the counts: seeds, the errors
	// a fault produced, why messages were left on the server.
	Notes []string
	// Failures are the case's own expectation failures (beyond the
	// invariants), filled in by the runner.
	Failures []string
}

// Outcome is "ok", or FAIL with the first reason.
func (r Row) Outcome() string {
	switch {
	case !r.Tally.OK(r.AllowedDups):
		return "FAIL: invariants"
	case len(r.Failures) > 0:
		return "FAIL: " + firstLineOf(r.Failures[0])
	}
	return "ok"
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 90 {
		s = s[:87] + "..."
	}
	return s
}

// Case is one scenario variant.
type Case struct {
	Name string
	Run  func(t T, o *Options) Row
}

// Group is a numbered scenario of the brief with its cases.
type Group struct {
	Name  string
	Cases []Case
}

// Groups lists every scenario in report order.
func Groups() []Group {
	return []Group{
		{"kills", KillCases()},
		{"concurrent", ConcurrentCases()},
		{"pop3", POP3FaultCases()},
		{"smtp", SMTPFaultCases()},
		{"storage", StorageFaultCases()},
		{"hostile", HostileCases()},
		{"security", SecurityCases()},
	}
}

// InvariantErrors returns the invariant violations of r, one per line, or
// nil.
func InvariantErrors(r Row) []string {
	if r.Tally.OK(r.AllowedDups) {
		return nil
	}
	out := []string{fmt.Sprintf("%s: lost %d, deleted-undelivered %d, duplicates %d (allowed %d), archive mismatches %d, relay mismatches %d, unmatched %d",
		r.Scenario, r.Lost, r.DeletedUndelivered, r.Duplicates, r.AllowedDups, r.ArchiveMismatches, r.RelayMismatches, r.Unmatched)}
	return append(out, sortedProblems(r.Problems, 20)...)
}

// WriteTable prints rows as the report table.
func WriteTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tRUNS\tKILLS\tMESSAGES\tDELIVERED\tWAITING\tLOST\tDELETED-UNDELIVERED\tDUPLICATES\tARCHIVE MISMATCH\tRELAY MISMATCH\tOUTCOME")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d/%d\t%d\t%d\t%s\n", r.Scenario, r.Runs, r.Kills, r.Messages,
			r.Delivered, r.Waiting+r.Refused, r.Lost, r.DeletedUndelivered, r.Duplicates, r.AllowedDups,
			r.ArchiveMismatches, r.RelayMismatches+r.Unmatched, r.Outcome())
	}
	tw.Flush()
}
