package ledger_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/ledger"
)

func TestUpgrade(t *testing.T) {
	at := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	later := at.Add(time.Hour)
	for _, c := range []struct {
		name string
		rec  ledger.Record // as stored
		want ledger.Record // as read
	}{
		{"deferred keeps its delivery timer",
			ledger.Record{NextAttempt: at},
			ledger.Record{NextAttempt: at}},
		{"no timer, nothing to move",
			ledger.Record{Held: "h", Disposition: ledger.DispositionBadmail},
			ledger.Record{Held: "h", Disposition: ledger.DispositionBadmail}},
		{"old held: refetch timer",
			ledger.Record{Held: "h", NextAttempt: at},
			ledger.Record{Held: "h", NextRefetch: at}},
		{"old held given up on the server: still the refetch timer",
			ledger.Record{Held: "h", GaveUp: true, NextAttempt: at},
			ledger.Record{Held: "h", GaveUp: true, NextRefetch: at}},
		{"old badmail: notice timer",
			ledger.Record{Disposition: ledger.DispositionBadmail, BadmailKey: "b", NextAttempt: at},
			ledger.Record{Disposition: ledger.DispositionBadmail, BadmailKey: "b", NextNotice: at}},
		{"old deleted on reject: notice timer",
			ledger.Record{Disposition: ledger.DispositionDeletedRejected, NextAttempt: at},
			ledger.Record{Disposition: ledger.DispositionDeletedRejected, NextNotice: at}},
		{"old given up on the server with badmail copy: notice timer",
			ledger.Record{GaveUp: true, BadmailKey: "b", NextAttempt: at},
			ledger.Record{GaveUp: true, BadmailKey: "b", NextNotice: at}},
		{"old held set aside as badmail: notice timer, not refetch",
			ledger.Record{Held: "h", Disposition: ledger.DispositionBadmail, BadmailKey: "b", NextAttempt: at},
			ledger.Record{Held: "h", Disposition: ledger.DispositionBadmail, BadmailKey: "b", NextNotice: at}},
		{"current held record left alone",
			ledger.Record{Held: "h", NextRefetch: later, NextAttempt: at},
			ledger.Record{Held: "h", NextRefetch: later, NextAttempt: at}},
		{"current badmail record left alone",
			ledger.Record{Disposition: ledger.DispositionBadmail, NextNotice: later, NextAttempt: at},
			ledger.Record{Disposition: ledger.DispositionBadmail, NextNotice: later, NextAttempt: at}},
		{"current records keep their fields",
			ledger.Record{Held: "h", NextRefetch: later, TooLargeLimit: 1 << 20},
			ledger.Record{Held: "h", NextRefetch: later, TooLargeLimit: 1 << 20}},
	} {
		got := c.rec
		got.Upgrade()
		if js(t, &got) != js(t, &c.want) {
			t.Errorf("%s: upgraded to\n%s\nwant %s", c.name, js(t, &got), js(t, &c.want))
		}
		got.Upgrade()
		if js(t, &got) != js(t, &c.want) {
			t.Errorf("%s: a second Upgrade changed it to %s", c.name, js(t, &got))
		}
	}
}

func js(t *testing.T, r *ledger.Record) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
