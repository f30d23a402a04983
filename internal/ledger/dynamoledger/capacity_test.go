package dynamoledger

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// message returns the record the connector writes for one message after
// archiving it: realistic sizes for the keys, IDs and replies.
func message(mailbox string, i, recipients int) *ledger.Record {
	at := time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC)
	uidl := fmt.Sprintf("%010d.M%06dP%07dQ%08d.host", 1741944413+i, 589793, 4242, i)
	r := &ledger.Record{
		Mailbox: mailbox, UIDL: uidl, FirstSeen: at, Size: 48213,
		ArchiveKey: mailbox + "/2025/03/14/" + uidl + ".eml",
		SHA256:     strings.Repeat("9f", 32), ArchivedAt: at.Add(120 * time.Millisecond),
		MessageID: fmt.Sprintf("CAH%d.%d.JavaMail.mailer@mail.example.org", i, 1741944413),
		// The connector's content fingerprint: a SHA-256 in hex, with a
		// version prefix (the longest form it writes).
		Fingerprint: "v1:" + strings.Repeat("c7", 32),
		Sender:      "newsletter-bounces+user=example.com@lists.example.org",
	}
	for j := range recipients {
		r.Recipients = append(r.Recipients, ledger.Recipient{Address: fmt.Sprintf("user%d@contoso.onmicrosoft.com", j), Status: ledger.Pending})
	}
	return r
}

// exchangeReply is the text of Exchange Online's 250 to DATA.
func exchangeReply(r *ledger.Record) string {
	return "2.6.0 <" + r.MessageID + "> [InternalId=123456789012, Hostname=AM0PR01MB1234.eurprd01.prod.exchangelabs.com] 52431 bytes in 0.234, 218.802 KB/sec Queued mail for delivery"
}

// shortReply is a relay's terse 250.
func shortReply(*ledger.Record) string { return "2.0.0 Ok: queued" }

// deliver marks every recipient accepted, as the connector records a 250.
func deliver(r *ledger.Record, reply func(*ledger.Record) string) {
	now := r.ArchivedAt.Add(800 * time.Millisecond)
	for j := range r.Recipients {
		rc := &r.Recipients[j]
		rc.Status, rc.Code, rc.At = ledger.Accepted, 250, now
		rc.Reply = reply(r)
	}
	r.Attempts, r.LastAttempt = 1, now
}

type costs struct {
	calls  map[string]int64
	wcu    float64
	writes int64 // write requests
	items  int64 // items written
}

func (l *Ledger) costs() costs {
	s := l.Stats()
	c := costs{calls: s.Calls, wcu: s.WriteUnits}
	for _, op := range []string{"PutItem", "TransactWriteItems", "UpdateItem", "DeleteItem"} {
		c.writes += s.Calls[op]
		c.items += s.ItemsWritten[op]
	}
	return c
}

// The connector's writes per delivered message, with the consumed capacity
// DynamoDB Local reports: archive Put, delivery Put, and the deletion mark
// in Puts of 25 (a transaction), against the same marks as single PutItems;
// then, with duplicate suppression on, the lookup and the delivery claim
// before DATA and the delivery as PutAccepted. The figures asserted are
// the package doc's.
func (e *env) testCapacity(t *testing.T) {
	const n = 25
	for _, c := range []struct {
		name       string
		recipients int
		reply      func(*ledger.Record) string
		on, off    float64 // WCU per delivered message with suppression on and off
	}{
		// Every item is under 1 KB.
		{"1 recipient, short reply", 1, shortReply, 5, 3},
		// The deleted record, with Exchange's long 250 text and the
		// fingerprint, is just over 1 KB: its mark costs 2 units.
		{"1 recipient, Exchange reply", 1, exchangeReply, 6, 4},
		{"5 recipients, Exchange reply", 5, exchangeReply, 13, 7},
	} {
		recipients := c.recipients
		t.Run(c.name, func(t *testing.T) {
			l := e.ledger(t, Options{CountCapacity: true})
			var recs []*ledger.Record
			for i := range n {
				recs = append(recs, message("user@example.com", i, recipients))
			}

			// Per poll: lease, list, release.
			l.ResetStats()
			le, err := l.Lease(bg(), "user@example.com", "poller", 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.List(bg(), "user@example.com"); err != nil {
				t.Fatal(err)
			}
			if err := le.Release(bg()); err != nil {
				t.Fatal(err)
			}
			poll := l.Stats()

			l.ResetStats()
			for _, r := range recs {
				if err := l.Put(bg(), r); err != nil {
					t.Fatal(err)
				}
			}
			archive := l.costs()
			l.ResetStats()
			for _, r := range recs {
				deliver(r, c.reply)
				if err := l.Put(bg(), r); err != nil {
					t.Fatal(err)
				}
			}
			delivery := l.costs()

			// Deletion marks: the first half as single PutItems, the
			// second half as one transaction, to compare per message.
			half := n / 2
			l.ResetStats()
			for _, r := range recs[:half] {
				r.DeletedAt = r.LastAttempt.Add(time.Second)
				if err := l.Put(bg(), r); err != nil {
					t.Fatal(err)
				}
			}
			single := l.costs()
			l.ResetStats()
			for _, r := range recs[half:] {
				r.DeletedAt = r.LastAttempt.Add(time.Second)
			}
			if err := l.Put(bg(), recs[half:]...); err != nil {
				t.Fatal(err)
			}
			tx := l.costs()

			if archive.writes != n || delivery.writes != n || single.writes != int64(half) || tx.calls["TransactWriteItems"] != 1 || tx.writes != 1 ||
				archive.items != n || delivery.items != n || single.items != int64(half) || tx.items != int64(n-half) {
				t.Fatalf("requests: archive %v, delivery %v, single %v, transaction %v", archive.calls, delivery.calls, single.calls, tx.calls)
			}
			if archive.wcu == 0 || delivery.wcu == 0 || single.wcu == 0 {
				t.Fatalf("DynamoDB Local reported no consumed capacity: %+v %+v %+v", archive, delivery, single)
			}
			// DynamoDB Local sizes a PutItem as DynamoDB does (1 WCU per
			// started KB) but does not model transactions: it reports four
			// times one item's units whatever the number of items. DynamoDB
			// bills each item of a TransactWriteItems as two writes, so the
			// transactional mark is costed as twice the single PutItem's.
			perArchive, perDelivery := archive.wcu/n, delivery.wcu/n
			perSingle := single.wcu / float64(half)
			perTx := 2 * perSingle
			t.Logf("per poll: calls %v, %.0f WCU, %.0f RCU (Lease PutItem + Release DeleteItem; List Query)", poll.Calls, poll.WriteUnits, poll.ReadUnits)
			t.Logf("per message: archive PutItem %.0f WCU, delivery PutItem %.0f WCU, deletion mark as PutItem %.0f WCU or in a transaction of %d %.0f WCU (DynamoDB Local reported %.0f WCU for the whole transaction)",
				perArchive, perDelivery, perSingle, n-half, perTx, tx.wcu)
			t.Logf("per delivered message: Puts of 25 (transaction): %.2f write requests, %.0f WCU; single PutItems: 3 write requests, %.0f WCU",
				2+1.0/25, perArchive+perDelivery+perTx, perArchive+perDelivery+perSingle)

			// With duplicate suppression on, each delivery attempt looks up
			// the Message-ID (one Query) and takes the delivery claim (one
			// conditional PutItem), and the delivery is a PutAccepted: the
			// record's conditional PutItem, then one PutItem per accepting
			// recipient's entry. No transaction: DynamoDB Local reports
			// every unit as DynamoDB bills it.
			dd := make([]*ledger.Record, n)
			for i := range n {
				dd[i] = message("other@example.com", i, recipients)
				if err := l.Put(bg(), dd[i]); err != nil {
					t.Fatal(err)
				}
			}
			l.ResetStats()
			var claimBytes int
			for _, r := range dd {
				addrs := make([]string, len(r.Recipients))
				for j, rc := range r.Recipients {
					addrs[j] = rc.Address
				}
				if _, err := l.Accepted(bg(), r.MessageID, addrs); err != nil {
					t.Fatal(err)
				}
				at := r.ArchivedAt.Add(500 * time.Millisecond)
				c := ledger.Claim{MessageID: r.MessageID, Fingerprint: r.Fingerprint, Mailbox: r.Mailbox, UIDL: r.UIDL, At: at, Expires: at.Add(15 * time.Minute)}
				if _, err := l.Claim(bg(), c, nil); err != nil {
					t.Fatal(err)
				}
				claimBytes = max(claimBytes, itemSize(e.getItem(t, l.table, claimPKPrefix+r.MessageID, claimSKPrefix+r.Fingerprint)))
			}
			claims := l.costs()
			lookups := l.Stats()
			if claims.calls["PutItem"] != n || claims.writes != n || claims.items != n || lookups.Calls["Query"] != n {
				t.Fatalf("requests of lookups and claims: %v, %d items; want %d Queries and %d PutItems", claims.calls, claims.items, n, n)
			}
			if claimBytes > 1024 {
				t.Fatalf("a claim item is %d bytes: more than one write unit", claimBytes)
			}
			perClaim := claims.wcu / n
			if perClaim != 1 {
				t.Errorf("a claim: %.2f WCU reported, want 1", perClaim)
			}

			l.ResetStats()
			var entryBytes int
			for _, r := range dd {
				deliver(r, c.reply)
				var acc []ledger.Acceptance
				for _, rc := range r.Recipients {
					a := ledger.Acceptance{MessageID: r.MessageID, Recipient: rc.Address, At: rc.At, Expires: rc.At.Add(7 * 24 * time.Hour), Fingerprint: r.Fingerprint}
					acc = append(acc, a)
					item, err := encodeDup(r.MessageID, rc.Address, r.Mailbox, r.UIDL, a)
					if err != nil {
						t.Fatal(err)
					}
					entryBytes = max(entryBytes, itemSize(item))
				}
				if err := l.PutAccepted(bg(), r, acc); err != nil {
					t.Fatal(err)
				}
			}
			dedupe := l.costs()
			perMessage := int64(1 + recipients)
			if dedupe.calls["PutItem"] != n*perMessage || dedupe.writes != n*perMessage || dedupe.items != n*perMessage ||
				dedupe.calls["TransactWriteItems"] != 0 {
				t.Fatalf("requests with duplicate suppression: %v, %d items; want %d PutItems per message, no transaction", dedupe.calls, dedupe.items, perMessage)
			}
			if entryBytes > 1024 {
				t.Fatalf("a duplicate-index entry is %d bytes: more than one write unit", entryBytes)
			}
			// Each entry (under 1 KB) costs 1 unit on top of the record's.
			perDedupe := dedupe.wcu / n
			if want := perDelivery + float64(recipients); perDedupe != want {
				t.Errorf("delivery with its entries: %.2f WCU reported, want %.0f (record %.0f + %d entries)", perDedupe, want, perDelivery, recipients)
			}
			total := perArchive + perClaim + perDedupe + perSingle
			off := perArchive + perDelivery + perSingle
			t.Logf("with duplicate suppression: lookup one Query per attempt (DynamoDB Local reports %.1f RCU; DynamoDB bills 1 RCU per started 4 KB read); claim one PutItem (%d bytes) %.0f WCU; delivery PutItem of the record and %d PutItems of entries (largest %d bytes) %.0f WCU; per delivered message %d write requests, %.0f WCU with the mark as a PutItem (%.0f without suppression)",
				lookups.ReadUnits/n, claimBytes, perClaim, recipients, entryBytes, perDedupe, 3+perMessage, total, off)
			archived, delivered, marked := recordSizes(t, message("user@example.com", 0, recipients), c.reply)
			t.Logf("record item sizes: archived %d, delivered %d, deleted %d bytes", archived, delivered, marked)
			if total != c.on || off != c.off {
				t.Errorf("a delivered message costs %.0f WCU with suppression on, %.0f off; the package doc says %.0f and %.0f", total, off, c.on, c.off)
			}
		})
	}
}

// itemSize is DynamoDB's size of an item: each name's length plus its
// value's; numbers counted as their digits (an upper bound of DynamoDB's
// encoding), a list or map as 3 bytes plus 1 per element and the
// elements' sizes.
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		return 3 + len(v.Value) + itemSize(v.Value)
	}
	return 0
}

// recordSizes are the sizes of r's item as archived, delivered and deleted.
func recordSizes(t *testing.T, r *ledger.Record, reply func(*ledger.Record) string) (archived, delivered, deleted int) {
	t.Helper()
	size := func() int {
		item, err := encodeRecord(r, r.Version+1, newToken(), DefaultRecordTTL)
		if err != nil {
			t.Fatal(err)
		}
		return itemSize(item)
	}
	archived = size()
	deliver(r, reply)
	delivered = size()
	r.DeletedAt = r.LastAttempt.Add(time.Second)
	return archived, delivered, size()
}
