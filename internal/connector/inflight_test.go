package connector_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector/connectortest"
)

// Several deliveries in flight against Dovecot and smtp-sink: each
// message arrives once and leaves the server; a crash with replies in
// flight repeats at most the declared window (Settings.ReplyWindow, here
// narrower than the deliveries in flight), each a reply the crashed run
// could not record.
func TestDeliveriesInFlight(t *testing.T) {
	const n, inFlight, window = 12, 4, 3
	seed := func(r *rig) map[string][]byte {
		sent := map[string][]byte{}
		for i := 0; i < n; i++ {
			m := []byte(fmt.Sprintf("From: a@isp.example\r\nSubject: %d\r\nMessage-ID: <inflight-%d@isp.example>\r\n\r\nbody %d\r\n", i, i, i))
			r.dovecot.Deliver(t, "sales", m)
			sent[fmt.Sprint(i)] = m
		}
		return sent
	}
	t.Run("each once", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		r.inFlight, r.window = inFlight, window
		seed(r)
		res := r.poll()
		if res.Err != nil || res.Delivered != n || res.Deleted != n {
			t.Fatalf("result %+v", res)
		}
		if got := r.sink.WaitFor(t, n, 10*time.Second); len(got) != n {
			t.Fatalf("%d relayed, want %d", len(got), n)
		}
	})
	t.Run("crash with replies in flight", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		r.inFlight, r.window = inFlight, window
		sent := seed(r)
		r.crash = connectortest.NewCrash(connectortest.Trigger{At: connectortest.AfterRelayReply, Nth: 5})
		crashed := r.poll()
		if !r.crash.Crashed() {
			t.Fatal("no crash")
		}
		r.crash = nil
		r.restart()
		r.clock.Advance(3 * time.Minute)
		if res := r.poll(); res.Err != nil {
			t.Fatalf("run after the crash: %v", res.Err)
		}
		got := countByDigest(t, r.sink.WaitFor(t, n+crashed.UnrecordedReplies, 10*time.Second))
		dups := 0
		for name, raw := range sent {
			c := got[digest(raw)]
			if c == 0 {
				t.Errorf("message %s lost", name)
			}
			dups += max(c-1, 0)
		}
		if dups != crashed.UnrecordedReplies || dups > window {
			t.Errorf("%d repeats, %d unrecorded replies reported, declared window %d", dups, crashed.UnrecordedReplies, window)
		}
		if left := r.dovecot.Count(t, "sales"); left != 0 {
			t.Errorf("%d left on the server", left)
		}
		t.Logf("crash with %d deliveries in flight, window %d: %d repeat(s)", inFlight, window, dups)
	})
}
