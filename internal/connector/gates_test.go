package connector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/route"
)

// heldOutcomes is a ledger whose writes of accepted outcomes wait until
// released: while they wait, every committed message stays in the reply
// window.
type heldOutcomes struct {
	ledger.Ledger
	release chan struct{}
}

func (h *heldOutcomes) Put(ctx context.Context, recs ...*ledger.Record) error {
	for _, r := range recs {
		for _, rc := range r.Recipients {
			if rc.Status == ledger.Accepted {
				<-h.release
				return h.Ledger.Put(ctx, recs...)
			}
		}
	}
	return h.Ledger.Put(ctx, recs...)
}

// The reply window bounds how many messages are committed (final ".")
// and not yet recorded, whatever the deliveries in flight: with the
// outcome writes held, exactly the window's worth of messages reach the
// SMTP server, and the rest follow once the writes go through.
func TestReplyWindowBoundsUnrecordedReplies(t *testing.T) {
	const n = 12
	for _, tc := range []struct{ inFlight, window int }{{4, 1}, {4, 2}, {8, 3}, {2, 4}} {
		t.Run(fmt.Sprintf("in flight %d window %d", tc.inFlight, tc.window), func(t *testing.T) {
			msgs := make([]connectortest.Message, n)
			for i := range msgs {
				msgs[i] = fakeMsg(i + 1)
			}
			r := newFakeRig(t, msgs...)
			r.inFlight, r.window = tc.inFlight, tc.window
			held := &heldOutcomes{Ledger: r.led, release: make(chan struct{})}
			done := make(chan connector.Result, 1)
			go func() { done <- r.pollWith(held) }()

			// A delivery whose outcome is written in the background
			// frees its turn, not its place in the window: the window
			// alone is the bound, whatever the deliveries in flight.
			want := tc.window
			waitUntil(t, func() bool { return len(r.smtp.Messages()) >= want })
			time.Sleep(50 * time.Millisecond) // time for a message past the bound to get through, if it could
			if got := len(r.smtp.Messages()); got != want {
				t.Fatalf("%d messages committed with their outcomes unrecorded; the window is %d", got, want)
			}
			close(held.release)
			res := <-done
			if res.Err != nil || res.Delivered != n || res.Deleted != n || len(r.smtp.Messages()) != n {
				t.Fatalf("after the writes went through: %+v, %d relayed", res, len(r.smtp.Messages()))
			}
		})
	}
}

// A route's connection limit holds over every poll of the process: three
// mailboxes polled at once, each with four deliveries in flight, never
// open more than the route allows, and every message gets through.
func TestRouteConnectionsSharedAcrossPolls(t *testing.T) {
	const perBox, boxes, limit = 10, 3, 2
	smtp := connectortest.NewRelay()
	var mbs []connector.Mailbox
	var first *fakeRig
	var rigs []*fakeRig
	for b := 0; b < boxes; b++ {
		msgs := make([]connectortest.Message, perBox)
		for i := range msgs {
			msgs[i] = fakeMsg(b*perBox + i + 1)
		}
		r := newFakeRig(t, msgs...)
		r.smtp, r.inFlight, r.window = smtp, 4, 8
		if first == nil {
			first = r
		} else {
			r.led, r.arc, r.clock = first.led, first.arc, first.clock
		}
		mb := r.mb
		mb.ID = fmt.Sprintf("box%d", b)
		mb.Dial = r.box.Dial()
		mbs = append(mbs, mb)
		rigs = append(rigs, r)
	}
	var scratch connector.Mailbox
	c := first.connector(first.led, &scratch)
	table, err := route.New([]route.Route{{Name: "delivery", Host: "127.0.0.1", Port: 25, MaxConnections: limit}})
	if err != nil {
		t.Fatal(err)
	}
	c.Routes = table
	c.Events = nil // three polls at once: the rig's event list is not for concurrent use
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, res := range c.PollAll(ctx, mbs, boxes) {
		if res.Err != nil || res.Delivered != perBox || res.Deleted != perBox {
			t.Errorf("%s: %+v", res.Mailbox, res)
		}
	}
	st := smtp.Stats()
	if st.MaxOpen > limit || st.MaxOpen < 1 {
		t.Errorf("%d connections open at once, the route allows %d", st.MaxOpen, limit)
	}
	if st.Open != 0 {
		t.Errorf("%d connections left open", st.Open)
	}
	for _, r := range rigs {
		if r.box.Len() != 0 {
			t.Errorf("%d messages left on a server", r.box.Len())
		}
	}
	if got := len(smtp.Messages()); got != perBox*boxes {
		t.Errorf("%d relayed, want %d", got, perBox*boxes)
	}
}

// waitUntil polls cond for up to ten seconds.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The connections the first deliveries use are opened while their
// messages are fetched, one per message up to the deliveries in flight,
// and a poll with nothing to deliver opens none.
func TestConnectionsOpenedAheadOfDeliveries(t *testing.T) {
	for _, tc := range []struct {
		name           string
		msgs, inFlight int
		wantDials      int
	}{
		{"fewer messages than deliveries in flight", 3, 8, 3},
		{"more messages than deliveries in flight", 12, 4, 4},
		{"one at a time", 5, 1, 1},
		{"nothing to deliver", 0, 8, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := make([]connectortest.Message, tc.msgs)
			for i := range msgs {
				msgs[i] = fakeMsg(i + 1)
			}
			r := newFakeRig(t, msgs...)
			r.inFlight, r.window = tc.inFlight, 4
			res := r.poll()
			if res.Err != nil || res.Delivered != tc.msgs || r.box.Len() != 0 {
				t.Fatalf("result %+v, %d left", res, r.box.Len())
			}
			if st := r.smtp.Stats(); st.Dials != tc.wantDials || st.Open != 0 {
				t.Errorf("stats %+v, want %d dials and none left open", st, tc.wantDials)
			}
		})
	}
}

// A message waiting for a place in the reply window never blocks the
// message that holds it: a rejected message gives its place back once its
// outcome is recorded, before its notice waits for the route's only
// connection (held by the message waiting for the place); and a message
// committed on one route does not wait for another route's connection
// (its recipients there are deferred instead). Each case deadlocked until
// the poll's deadline before.
func TestReplyWindowAndConnectionLimitDoNotDeadlock(t *testing.T) {
	const n = 6
	for _, tc := range []struct {
		name   string
		routes []route.Route
		to     []string
		setup  func(*connectortest.Relay)
		check  func(t *testing.T, res connector.Result)
	}{
		{"a notice after a rejection",
			[]route.Route{{Name: "delivery", Host: "127.0.0.1", Port: 25, MaxConnections: 1}},
			[]string{"alice@corp.example", "bob@corp.example"},
			func(r *connectortest.Relay) {
				r.SetRcpt("bob@corp.example", connectortest.Reply(550, "5.1.1", "no such user"))
			},
			func(t *testing.T, res connector.Result) {
				if res.Notices != n {
					t.Errorf("%d notices, want %d", res.Notices, n)
				}
			}},
		{"a message over two routes",
			[]route.Route{{Name: "delivery", Host: "127.0.0.1", Port: 25, MaxConnections: 1, AddressSpaces: []string{"corp.example"}},
				{Name: "partner", Host: "127.0.0.2", Port: 25, MaxConnections: 1, AddressSpaces: []string{"partner.example"}}},
			[]string{"alice@corp.example", "bob@partner.example"},
			func(*connectortest.Relay) {},
			func(t *testing.T, res connector.Result) {
				if res.Delivered+res.Deferred != n {
					t.Errorf("%d delivered and %d deferred, want all %d either", res.Delivered, res.Deferred, n)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := make([]connectortest.Message, n)
			for i := range msgs {
				msgs[i] = fakeMsg(i + 1)
			}
			r := newFakeRig(t, msgs...)
			r.inFlight, r.window = 2, 1
			r.mb.DeliverTo = tc.to
			tc.setup(r.smtp)
			mb := r.mb
			c := r.connector(r.led, &mb)
			table, err := route.New(tc.routes)
			if err != nil {
				t.Fatal(err)
			}
			c.Routes, c.DialRoute = table, r.smtp.RouteDialer()
			c.Settings.Notify = connector.NotifySettings{To: "postmaster@corp.example", UnknownRecipient: true}
			// Room for the poll's budget (two SMTP timeouts), which a
			// deadlock would spend before the poll stopped.
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			start := time.Now()
			res := c.Poll(ctx, mb)
			if took := time.Since(start); took > 3*time.Second || res.Stopped != "" {
				t.Fatalf("poll took %v, stopped %q: %+v", took, res.Stopped, res)
			}
			if res.Err != nil {
				t.Fatalf("poll: %v", res.Err)
			}
			tc.check(t, res)
			if st := r.smtp.Stats(); st.MaxOpen > 2 || st.Open != 0 {
				t.Errorf("connections: %+v", st)
			}
		})
	}
}
