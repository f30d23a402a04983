package dynamoledger

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Duplicate-index items; see the package doc.
const (
	dupPKPrefix = "MID#"
	dupSKPrefix = "RCPT#"
)

// dupItem is one duplicate-index entry as stored.
type dupItem struct {
	PK        string `dynamodbav:"pk"`
	SK        string `dynamodbav:"sk"`
	MessageID string `dynamodbav:"message_id"`
	Recipient string `dynamodbav:"recipient"`
	Mailbox   string `dynamodbav:"mailbox"`
	UIDL      string `dynamodbav:"uidl"`
	At        string `dynamodbav:"at"`
	Expires   string `dynamodbav:"expires"` // RFC 3339 with nanoseconds
	TTL       int64  `dynamodbav:"ttl"`     // epoch seconds, rounded up
	// Fingerprint is absent in entries written before it existed.
	Fingerprint string `dynamodbav:"fingerprint,omitempty"`
}

func encodeDup(id, rcpt, mailbox, uidl string, a ledger.Acceptance) (map[string]types.AttributeValue, error) {
	return attributevalue.MarshalMap(dupItem{
		PK: dupPKPrefix + id, SK: dupSKPrefix + rcpt,
		MessageID: id, Recipient: rcpt, Mailbox: mailbox, UIDL: uidl,
		At: formatTime(a.At), Expires: formatTime(a.Expires), TTL: ttlAt(a.Expires),
		Fingerprint: a.Fingerprint,
	})
}

// PutAccepted writes rec with Put's conditional PutItem and then each
// duplicate-index entry of accepted with an unconditional PutItem: 1 write
// unit per entry (an entry is well under 1 KB), where a transaction would
// bill twice the units of every item. The order keeps the ledger's
// guarantee without a transaction: an entry is written only once the
// record holding its 250 is durable, so a copy is never suppressed by a
// delivery that is not recorded. A failed or conflicting record write
// writes no entry. An entry that fails after the record was written (each
// PutItem is retried by the client first) leaves the record standing,
// rec.Version updated, and returns an error wrapping
// ledger.ErrIndexNotWritten: the recipient's next copy is delivered
// again, never lost. A crash between the two writes has the same effect.
func (l *Ledger) PutAccepted(ctx context.Context, rec *ledger.Record, accepted []ledger.Acceptance) error {
	if err := l.ready(ctx, "put"); err != nil {
		return err
	}
	var entries []map[string]types.AttributeValue
	seen := map[string]bool{}
	for _, a := range accepted {
		id, rcpt, ok := ledger.DuplicateKey(a.MessageID, a.Recipient)
		if !ok || seen[rcpt] {
			continue // one write per key is enough
		}
		if a.Expires.IsZero() {
			return fmt.Errorf("dynamoledger: put %s/%q: duplicate-index entry for %s without an expiry", rec.Mailbox, rec.UIDL, rcpt)
		}
		seen[rcpt] = true
		item, err := encodeDup(id, rcpt, rec.Mailbox, rec.UIDL, a)
		if err != nil {
			return fmt.Errorf("dynamoledger: put %s/%q: %w", rec.Mailbox, rec.UIDL, err)
		}
		entries = append(entries, item)
	}
	if err := l.Put(ctx, rec); err != nil {
		return err
	}
	for i, item := range entries {
		res, err := l.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(l.table), Item: item, ReturnConsumedCapacity: l.capacity,
		}, l.opts)
		if err != nil {
			l.count("PutItem", 0)
			var missing []string
			for _, m := range entries[i:] {
				missing = append(missing, strings.TrimPrefix(stringAttr(m, attrSK), dupSKPrefix))
			}
			return fmt.Errorf("dynamoledger: put %s/%q: %w: no entry for %s (record stored as version %d): %w",
				rec.Mailbox, rec.UIDL, ledger.ErrIndexNotWritten, strings.Join(missing, ", "), rec.Version, err)
		}
		l.count("PutItem", 1, one(res.ConsumedCapacity)...)
	}
	return nil
}

// Accepted returns the unexpired duplicate-index entries of messageID for
// recipients: one strongly consistent Query of the Message-ID's items.
func (l *Ledger) Accepted(ctx context.Context, messageID string, recipients []string) (map[string]ledger.Acceptance, error) {
	if err := l.ready(ctx, "accepted"); err != nil {
		return nil, err
	}
	out := make(map[string]ledger.Acceptance)
	want := map[string][]string{} // normalized recipient -> as given
	var id string
	for _, r := range recipients {
		nid, rcpt, ok := ledger.DuplicateKey(messageID, r)
		if !ok {
			continue
		}
		id = nid
		want[rcpt] = append(want[rcpt], r)
	}
	if len(want) == 0 {
		return out, nil
	}
	in := &dynamodb.QueryInput{
		TableName:                aws.String(l.table),
		KeyConditionExpression:   aws.String("#pk = :pk"),
		ExpressionAttributeNames: map[string]string{"#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": &types.AttributeValueMemberS{Value: dupPKPrefix + id},
		},
		ConsistentRead:         aws.Bool(true),
		ReturnConsumedCapacity: l.capacity,
	}
	now := l.now()
	pages := dynamodb.NewQueryPaginator(l.client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx, l.opts)
		if err != nil {
			return nil, fmt.Errorf("dynamoledger: accepted %q: %w", id, err)
		}
		l.count("Query", 0, one(page.ConsumedCapacity)...)
		for _, av := range page.Items {
			var it dupItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return nil, fmt.Errorf("dynamoledger: accepted %q: undecodable item %s: %w", id, stringAttr(av, attrSK), err)
			}
			if it.SK != dupSKPrefix+it.Recipient {
				return nil, fmt.Errorf("dynamoledger: accepted %q: item %s names recipient %q", id, it.SK, it.Recipient)
			}
			at, err := parseTime("at", it.At)
			if err != nil {
				return nil, fmt.Errorf("dynamoledger: accepted %q: item %s: %w", id, it.SK, err)
			}
			expires, err := parseTime("expires", it.Expires)
			if err != nil {
				return nil, fmt.Errorf("dynamoledger: accepted %q: item %s: %w", id, it.SK, err)
			}
			// DynamoDB deletes expired items within days, not at once.
			if !expires.After(now) {
				continue
			}
			a := ledger.Acceptance{MessageID: it.MessageID, Recipient: it.Recipient, Mailbox: it.Mailbox, UIDL: it.UIDL,
				At: at, Expires: expires, Fingerprint: it.Fingerprint}
			for _, given := range want[it.Recipient] {
				out[given] = a
			}
		}
	}
	return out, nil
}
