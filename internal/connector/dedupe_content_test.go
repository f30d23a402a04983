package connector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
	"github.com/popconnector/popconnector/internal/testenv"
)

// withTrace returns msg as another POP3 mailbox would hold it: the fields
// each copy gets on its way (trace, envelope, a spam score) differ.
func withTrace(msg []byte, box string) []byte {
	return append([]byte(fmt.Sprintf("Return-Path: <bounce+%s@list.example>\r\nDelivered-To: %s@isp.example\r\n"+
		"Received: from mx.isp.example by pop.isp.example for <%s@isp.example>; Mon, 30 Nov 2026 09:14:05 +0000\r\n"+
		"X-Spam-Score: 0.%d\r\n", box, box, box, len(box))), msg...)
}

// Two different messages with one Message-ID (a scanner reusing it) are
// both delivered, in one mailbox and across mailboxes; the second is
// logged as a warning naming both copies, never suppressed.
func TestReusedMessageIDOtherContentDelivered(t *testing.T) {
	scan1, scan2 := fixture(t, "reused-id-scan-1.eml"), fixture(t, "reused-id-scan-2.eml")
	t.Run("one mailbox", func(t *testing.T) {
		r := newRig(t, rigOptions{})
		r.dovecot.Deliver(t, "sales", scan1)
		r.dovecot.Deliver(t, "sales", scan2)
		res := pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
		if res.Delivered != 2 || res.Suppressed != 0 || res.Deleted != 2 {
			t.Fatalf("poll %+v, want both delivered and deleted", res)
		}
		if n := copiesPerRecipient(r.sink.Messages(t))["alice@corp.example"]; n != 2 {
			t.Fatalf("alice got %d messages, want 2", n)
		}
		recs := recordsOf(t, r, "sales")
		for _, rec := range recs {
			if rc := recipientOf(t, rec, "alice@corp.example"); rc.Status != ledger.Accepted {
				t.Errorf("%s: %s (%s), want accepted", rec.UIDL, rc.Status, rc.Reply)
			}
		}
		logs := r.logs.String()
		if !strings.Contains(logs, "same Message-ID, other content: not a duplicate, delivered") ||
			!strings.Contains(logs, `"uidl":"`+recs[1].UIDL+`","message_id":"reused@partner.example","recipient":"alice@corp.example","first_mailbox":"sales","first_uidl":"`+recs[0].UIDL+`"`) {
			t.Errorf("no warning naming both copies:\n%s", logs)
		}
		if s := connector.Summarize("sales", recs); s.Delivered != 2 || s.Suppressed != 0 {
			t.Errorf("status %+v, want 2 delivered, none suppressed", s)
		}
	})
	t.Run("two mailboxes", func(t *testing.T) {
		r := newRig(t, rigOptions{users: []string{"support"}})
		r.dovecot.Deliver(t, "sales", scan1)
		r.dovecot.Deliver(t, "support", scan2)
		pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
		if res := pollBox(t, r, boxFor(r, "support", "alice@corp.example")); res.Delivered != 1 || res.Suppressed != 0 {
			t.Fatalf("second mailbox %+v, want delivered", res)
		}
		if n := len(r.sink.Messages(t)); n != 2 {
			t.Fatalf("%d messages relayed, want 2", n)
		}
	})
}

// Copies that differ only in the fields each POP3 copy gets (Received,
// Delivered-To, Return-Path, a spam score) are the same message: the
// second is suppressed.
func TestDuplicateWithOwnTraceFieldsSuppressed(t *testing.T) {
	r := newRig(t, rigOptions{users: []string{"support"}})
	order := fixture(t, "order.eml")
	r.dovecot.Deliver(t, "sales", withTrace(order, "sales"))
	r.dovecot.Deliver(t, "support", withTrace(order, "support"))
	pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
	if res := pollBox(t, r, boxFor(r, "support", "alice@corp.example")); res.Suppressed != 1 || res.Delivered != 0 {
		t.Fatalf("second copy %+v, want suppressed", res)
	}
	if n := len(r.sink.Messages(t)); n != 1 {
		t.Fatalf("%d messages relayed, want 1", n)
	}
}

// An index entry written before fingerprints existed (none recorded)
// cannot show that a copy has the same content: the copy is delivered.
func TestIndexEntryWithoutFingerprintNeverSuppresses(t *testing.T) {
	r := newRig(t, rigOptions{})
	order := fixture(t, "order.eml")
	r.dovecot.Deliver(t, "sales", order)
	old := &ledger.Record{Mailbox: "old", UIDL: "u1", FirstSeen: r.clock.Now().UTC(), MessageID: "order-4711@supplier.example",
		Recipients: []ledger.Recipient{{Address: "alice@corp.example", Status: ledger.Accepted, Code: 250, At: r.clock.Now().UTC()}}}
	acc := ledger.Acceptance{MessageID: old.MessageID, Recipient: "alice@corp.example", At: r.clock.Now().UTC(), Expires: r.clock.Now().Add(week)}
	if err := r.led.PutAccepted(context.Background(), old, []ledger.Acceptance{acc}); err != nil {
		t.Fatal(err)
	}
	if res := pollBox(t, r, boxFor(r, "sales", "alice@corp.example")); res.Delivered != 1 || res.Suppressed != 0 {
		t.Fatalf("poll %+v, want delivered", res)
	}
	if !strings.Contains(r.logs.String(), "cannot be compared with this one: delivered") {
		t.Error("the uncomparable entry is not logged")
	}
}

// The same message in many mailboxes polled at once, on bolt and on
// DynamoDB Local, at the default parallelism and at 64: the recipient gets
// it once. Copies that met another copy's claim wait for the next poll,
// which suppresses them; every copy leaves the server.
func TestDuplicateParallelMailboxesDeliveredOnce(t *testing.T) {
	local := testenv.StartDynamoDBLocal(t)
	tests := []struct {
		ledger    string
		parallel  int
		mailboxes int
	}{
		{"bolt", 4, 8},
		{"bolt", 64, 64},
		{"dynamodb", 4, 8},
		{"dynamodb", 64, 64},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/parallel-%d", tt.ledger, tt.parallel), func(t *testing.T) {
			users := make([]string, tt.mailboxes)
			for i := range users {
				users[i] = fmt.Sprintf("box%02d", i)
			}
			r := newRig(t, rigOptions{users: users})
			c := r.connector()
			if tt.ledger == "dynamodb" {
				c.Ledger = dynamoTable(t, local, r.clock.Now)
			}
			order := fixture(t, "order.eml")
			var boxes []connector.Mailbox
			for i, u := range users {
				r.dovecot.Deliver(t, u, withTrace(order, u))
				r.dovecot.Deliver(t, u, []byte(fmt.Sprintf("From: a@b.example\r\nSubject: own %d\r\nMessage-ID: <own-%d@b.example>\r\n\r\nbody %d\r\n", i, i, i)))
				boxes = append(boxes, boxFor(r, u, "alice@corp.example"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			for round := 0; round < 3; round++ {
				for _, res := range c.PollAll(ctx, boxes, tt.parallel) {
					if res.Err != nil {
						t.Fatalf("round %d: %s: %v", round, res.Mailbox, res.Err)
					}
				}
				r.clock.Advance(time.Minute)
			}
			got := r.sink.Messages(t)
			copies := 0
			for _, m := range got {
				if strings.Contains(string(m.Data), "Message-ID: <order-4711@supplier.example>") {
					copies++
				}
			}
			if copies != 1 || len(got) != tt.mailboxes+1 {
				t.Fatalf("the shared message arrived %d times (want 1), %d messages in all (want %d)", copies, len(got), tt.mailboxes+1)
			}
			for _, u := range users {
				if n := r.dovecot.Count(t, u); n != 0 {
					t.Errorf("%s: %d messages left on the server", u, n)
				}
			}
		})
	}
}

// dynamoTable is a DynamoDB ledger on a fresh table of local.
func dynamoTable(t *testing.T, local *testenv.DynamoDBLocal, now func() time.Time) ledger.Ledger {
	t.Helper()
	client := local.Client(t)
	name := fmt.Sprintf("connector-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dynamoledger.CreateTable(ctx, client, name); err != nil {
		t.Fatal(err)
	}
	return dynamoledger.New(client, dynamoledger.Options{Table: name, Now: now})
}

// A Message-ID longer than the index keys on (998 octets) is never
// indexed or claimed: the message is delivered like one without a
// Message-ID, and the mailbox goes on.
func TestOverlongMessageIDDelivered(t *testing.T) {
	r := newRig(t, rigOptions{})
	id := strings.Repeat("a", 1200) + "@x.example"
	r.dovecot.Deliver(t, "sales", []byte("From: a@b.example\r\nSubject: long id\r\nMessage-ID: <"+id+">\r\n\r\nbody\r\n"))
	r.seed("order.eml")
	res := pollBox(t, r, boxFor(r, "sales", "alice@corp.example"))
	if res.Delivered != 2 || res.Deleted != 2 {
		t.Fatalf("poll %+v, want both delivered and deleted", res)
	}
}
