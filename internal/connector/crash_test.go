package connector_test

import (
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector/connectortest"
)

// A crash after each durable step, then a fresh run (a new process: the
// ledger file reopened): nothing is lost, nothing is deleted without a
// recorded delivery, and a duplicate appears only when the crash fell
// between the reply to DATA and recording it.
func TestCrashAfterEachStep(t *testing.T) {
	tests := []struct {
		at         connectortest.Point
		nth        int // which occurrence the crash hits (the second message); 0 = the first
		duplicates int // at least: the crash may also catch another message in its DATA window
	}{
		{connectortest.AfterArchived, 2, 0},
		{connectortest.AfterArchiveRecorded, 2, 0},
		{connectortest.AfterRelayReply, 2, 1}, // the accepted window
		{connectortest.AfterDeliveryRecorded, 2, 0},
		{connectortest.AfterDele, 0, 0}, // DELE sent, connection dropped before QUIT: rolled back
		{connectortest.AfterQuit, 0, 0}, // deleted on the server, not yet recorded
	}
	for _, tt := range tests {
		t.Run(string(tt.at), func(t *testing.T) {
			r := newRig(t, rigOptions{})
			sent := r.seed("order.eml", "newsletter.eml", "no-message-id.eml")
			// The process dies right after the step: every later call of
			// the poll on the ledger, archive, POP3 and SMTP fails.
			r.crash = connectortest.NewCrash(connectortest.Trigger{At: tt.at, Nth: tt.nth})
			res := r.poll()
			if !r.crash.Crashed() || res.Err == nil {
				t.Fatalf("first run did not stop at %s: %+v", tt.at, res)
			}
			unrecorded := res.UnrecordedReplies
			// Nothing deleted without a recorded delivery.
			onServer := r.dovecot.Count(t, "sales")
			delivered := 0
			for _, rec := range r.records() {
				if rec.Delivered() {
					delivered++
				}
			}
			if deletedNow := len(sent) - onServer; deletedNow > delivered {
				t.Fatalf("%d deleted from the server, only %d deliveries recorded", deletedNow, delivered)
			}

			r.crash = nil
			r.restart()
			res = r.poll()
			if res.Err != nil {
				t.Fatalf("run after the crash: %v", res.Err)
			}
			if n := r.dovecot.Count(t, "sales"); n != 0 {
				t.Fatalf("%d messages still on the server after recovery", n)
			}
			// Every reply the crashed run could not record may come again.
			got := countByDigest(t, r.sink.WaitFor(t, len(sent)+unrecorded, 10*time.Second))
			dups := 0
			for name, raw := range sent {
				n := got[digest(raw)]
				if n == 0 {
					t.Errorf("%s lost", name)
				}
				dups += max(n-1, 0)
			}
			// Every duplicate must come from a reply the first run received
			// but could not record, and nothing else.
			if dups != unrecorded || dups < tt.duplicates {
				t.Errorf("%d duplicates; the crashed run reported %d unrecorded replies; want at least %d", dups, unrecorded, tt.duplicates)
			}
			// One message at most is between its "." and its record: the
			// next one's "." waits for the previous record.
			if dups > 1 {
				t.Errorf("%d duplicates after one crash, want at most 1", dups)
			}
			for _, rec := range r.records() {
				if !rec.Delivered() || !rec.Deleted() {
					t.Errorf("%s: delivered=%v deleted=%v", rec.UIDL, rec.Delivered(), rec.Deleted())
				}
				if b := r.archived(rec.ArchiveKey); digest(b) != rec.SHA256 {
					t.Errorf("%s: archive does not match its digest", rec.UIDL)
				}
			}
			t.Logf("crash %s: %d duplicate(s)", tt.at, dups)
		})
	}
}
