package reliability

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// ConcurrentCases are scenario 2: several pollers on one mailbox and one
// ledger (goroutines with their own lease owners: a bbolt file admits one
// process).
func ConcurrentCases() []Case {
	return []Case{
		{"concurrent/3-pollers", runThreePollers},
		{"concurrent/lease-expires-mid-data", runLeaseExpiresMidData},
	}
}

// runThreePollers starts three connectors on the same mailbox at once,
// round after round, with a slightly slow SMTP side so that their polls
// overlap; each message must be delivered once.
func runThreePollers(t T, o *Options) Row {
	seed := seedOf(o)
	t.Logf("concurrent pollers: seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 2))
	r := NewRig(t, o, RigOptions{Dovecot: true, Script: &testenv.SMTPScript{OnData: func(string, []string, []byte) error {
		time.Sleep(5 * time.Millisecond)
		return nil
	}}})
	r.MailboxEdit = func(mb *connector.Mailbox) { mb.MaxMessages = 10 } // several rounds
	ids, msgs := SeqMessages(1, o.ConcurrentMessages)
	r.SeedDovecot(ids, msgs)
	var held atomic.Int32
	for round := 0; round < 4*o.ConcurrentMessages/10+10 && !r.Done(); round++ {
		var wg sync.WaitGroup
		for p := 1; p <= 3; p++ {
			c := r.Connector(fmt.Sprintf("poller-%d", p))
			delay := time.Duration(rng.IntN(30)) * time.Millisecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(delay)
				res := c.Poll(t.Context(), r.Mailbox())
				if errors.Is(res.Err, ledger.ErrLeaseHeld) {
					held.Add(1)
				} else if res.Err != nil {
					t.Errorf("poller: %v", res.Err)
				}
			}()
		}
		wg.Wait()
		r.Runs += 3
		r.Clock.Advance(time.Second)
	}
	if !r.Done() {
		t.Errorf("not done after %d polls", r.Runs)
	}
	row := r.Row("concurrent/3-pollers", 0)
	row.Notes = append(row.Notes, fmt.Sprintf("seed %d; %d of %d polls found the lease held", seed, held.Load(), r.Runs))
	return row
}

// runLeaseExpiresMidData: poller A stalls after the final "." of DATA
// past its lease's expiry — staged by moving the shared clock past the TTL
// (poll timeout + 2 min) while the server withholds its reply — and poller
// B takes the mailbox. In real time this cannot happen (A starts a message
// only with 2×timeout+5s of its poll left, and its lease outlives the poll
// by 2 minutes); it takes a stalled process or a clock jump, the known
// limit of a lease without fencing tokens, which an SMTP server cannot
// check. The connector documents it. What must still hold: nothing lost,
// nothing deleted undelivered, A's late write refused (ErrConflict), and
// at most the one message A had in flight duplicated.
func runLeaseExpiresMidData(t T, o *Options) Row {
	if !o.Ledger.HonoursClock {
		t.Skipf("ledger %s does not take the scenario's clock for leases", o.Ledger.Name)
	}
	stalled := make(chan struct{})
	release := make(chan struct{})
	var first atomic.Bool
	r := NewRig(t, o, RigOptions{Dovecot: true, Script: &testenv.SMTPScript{OnData: func(_ string, _ []string, data []byte) error {
		if seqOf(data) == 2 && first.CompareAndSwap(false, true) {
			close(stalled)
			select {
			case <-release:
			case <-time.After(time.Minute):
			}
		}
		return nil
	}}})
	r.RelayOpts.Timeout = 30 * time.Second
	ids, msgs := SeqMessages(1, 5)
	r.SeedDovecot(ids, msgs)

	a := r.Connector("poller-a")
	resA := make(chan connector.Result, 1)
	go func() { resA <- a.Poll(t.Context(), r.Mailbox()) }()
	select {
	case <-stalled:
	case <-time.After(time.Minute):
		t.Fatalf("poller A never reached DATA of message 2")
	}
	r.Clock.Advance(r.Mailbox().PollTimeout + 2*time.Minute + time.Second)
	resB := r.PollWith(r.Connector("poller-b"))
	close(release)
	ra := <-resA
	r.Runs++
	t.Logf("poller A: delivered %d err %v; poller B: delivered %d deleted %d err %v", ra.Delivered, ra.Err, resB.Delivered, resB.Deleted, resB.Err)
	r.Clock.Advance(time.Hour)
	r.PollUntilDone(3)
	row := r.Row("concurrent/lease-expires-mid-data", 1)
	if row.Duplicates > 0 && !errors.Is(ra.Err, ledger.ErrConflict) {
		t.Errorf("%d duplicate(s), and poller A's late write was not refused as a conflict: %v", row.Duplicates, ra.Err)
	}
	row.Notes = append(row.Notes, fmt.Sprintf("A: %v; B: delivered %d, err %v", ra.Err, resB.Delivered, resB.Err))
	return row
}

// seedOf returns the options' seed, or one from the clock.
func seedOf(o *Options) int64 {
	if o.Seed != 0 {
		return o.Seed
	}
	return time.Now().UnixNano()
}
