package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

// scriptedLease answers Renew from a script (the last answer repeats) and
// counts the calls.
type scriptedLease struct {
	mu      sync.Mutex
	answers []error
	renews  atomic.Int32
}

func (l *scriptedLease) Renew(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := int(l.renews.Add(1)) - 1
	return l.answers[min(n, len(l.answers)-1)]
}

func (l *scriptedLease) Release(context.Context) error { return nil }

func TestKeepLease(t *testing.T) {
	const term = 60 * time.Millisecond
	transient := errors.New("dynamodb: throttled")
	held := fmt.Errorf("dynamoledger: renew: %w", ledger.ErrLeaseHeld)
	tests := []struct {
		name     string
		answers  []error
		wantLost bool
		wantText string
	}{
		{name: "renewals succeed: the poll goes on", answers: []error{nil}},
		{name: "one failure then success: tried again", answers: []error{transient, nil}},
		{name: "another owner took it: lost at once", answers: []error{nil, held}, wantLost: true, wantText: "lease held"},
		{name: "renewals fail for a term: lost before it expires", answers: []error{transient}, wantLost: true, wantText: "not renewed for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			le := &scriptedLease{answers: tt.answers}
			lostc := make(chan error, 1)
			stop := keepLease(le, term, time.Now, slog.New(slog.DiscardHandler), func(err error) { lostc <- err })
			var lost error
			select {
			case lost = <-lostc:
			case <-time.After(8 * term):
			}
			stop()
			if got := lost != nil; got != tt.wantLost {
				t.Fatalf("lost = %v, want lost %v (renewals %d)", lost, tt.wantLost, le.renews.Load())
			}
			if !tt.wantLost {
				if le.renews.Load() < 3 {
					t.Errorf("renewed %d times in 8 terms, want it renewed every third of a term", le.renews.Load())
				}
				return
			}
			if !errors.Is(lost, errLeaseLost) || errors.Is(lost, ledger.ErrLeaseHeld) {
				t.Errorf("lost with %v: want errLeaseLost, never ErrLeaseHeld (a lost lease is a failure, not busy)", lost)
			}
			if !strings.Contains(lost.Error(), tt.wantText) {
				t.Errorf("lost with %q, want it to say %q", lost, tt.wantText)
			}
		})
	}
}
