package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// A poll holds its mailbox's lease for a short term and renews it while
// it runs, instead of taking it once for the whole poll timeout: a poller
// that dies without releasing it (a Lambda invocation killed at its
// deadline or out of memory, kill -9) blocks the mailbox for at most one
// term, not for the poll timeout plus a margin.

// DefaultLeaseTerm is how long a mailbox lease lasts past its last
// renewal when Settings.LeaseTerm is zero. A poll renews it every third
// of the term, so two renewals may fail (a DynamoDB hiccup) before the
// lease is at risk.
const DefaultLeaseTerm = 90 * time.Second

// leaseTerm is the term of the leases the connector takes.
func (s Settings) leaseTerm() time.Duration {
	if s.LeaseTerm > 0 {
		return s.LeaseTerm
	}
	return DefaultLeaseTerm
}

// errLeaseLost is the cause of a poll stopped because its lease could not
// be kept: another poller took it, or renewals failed for a whole term.
var errLeaseLost = errors.New("connector: mailbox lease lost")

// keepLease renews le every third of term until stop is called, from a
// goroutine of its own. When the lease is lost (ErrLeaseHeld) or cannot
// be renewed before it would expire, it calls lost with the reason: the
// poll stops starting work (its context ends), and what it already did is
// still written (conditionally: a write another poller's changes made
// stale fails instead of overwriting them). stop waits for the goroutine.
func keepLease(le ledger.Lease, term time.Duration, now func() time.Time, log *slog.Logger, lost func(error)) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		defer func() {
			if v := recover(); v != nil {
				log.Error("lease renewal stopped", "err", fmt.Sprintf("internal error: %v", v))
				lost(fmt.Errorf("%w: internal error renewing it: %v", errLeaseLost, v))
			}
		}()
		every := term / 3
		t := time.NewTicker(every)
		defer t.Stop()
		renewed := now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(context.Background(), every)
			err := le.Renew(rctx)
			cancel()
			switch {
			case err == nil:
				renewed = now()
			case errors.Is(err, ledger.ErrLeaseHeld):
				lost(fmt.Errorf("%w: %v", errLeaseLost, err)) // %v: a lost lease is a failure, not "busy"
				return
			case now().Sub(renewed) >= term-every:
				// The next failure would let the lease expire under us.
				lost(fmt.Errorf("%w: not renewed for %s: %w", errLeaseLost, now().Sub(renewed).Round(time.Second), err))
				return
			default:
				log.Warn("lease renewal failed; trying again", "err", err)
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
