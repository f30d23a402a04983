package dynamoledger

import (
	"context"
	"fmt"
	"time"

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
	// maxTransactItems is TransactWriteItems' limit on items.
	maxTransactItems = 100
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
}

func encodeDup(id, rcpt, mailbox, uidl string, a ledger.Acceptance) (map[string]types.AttributeValue, error) {
	ttl := a.Expires.Unix()
	if a.Expires.After(time.Unix(ttl, 0)) {
		ttl++
	}
	return attributevalue.MarshalMap(dupItem{
		PK: dupPKPrefix + id, SK: dupSKPrefix + rcpt,
		MessageID: id, Recipient: rcpt, Mailbox: mailbox, UIDL: uidl,
		At: formatTime(a.At), Expires: formatTime(a.Expires), TTL: ttl,
	})
}

// PutAccepted writes rec and the duplicate-index entries of accepted in
// one TransactWriteItems: the record's conditional Put and an
// unconditional Put per entry. The transaction holds the record and up to
// 99 entries; further entries (a message with more than 99 recipients
// accepting in one attempt) follow as single PutItems once the
// transaction has committed, so each still stands for a recorded 250, but
// a crash before they are written leaves those recipients unindexed
// (their next copy is delivered again, never lost).
func (l *Ledger) PutAccepted(ctx context.Context, rec *ledger.Record, accepted []ledger.Acceptance) error {
	if err := l.ready(ctx, "put"); err != nil {
		return err
	}
	var entries []map[string]types.AttributeValue
	seen := map[string]bool{}
	for _, a := range accepted {
		id, rcpt, ok := ledger.DuplicateKey(a.MessageID, a.Recipient)
		if !ok || seen[rcpt] {
			continue // a transaction may not name one item twice
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
	if len(entries) == 0 {
		return l.Put(ctx, rec)
	}
	token := newToken()
	ops, err := l.prepare([]*ledger.Record{rec}, token)
	if err != nil {
		return err
	}
	inTx := min(len(entries), maxTransactItems-1)
	extra := make([]types.TransactWriteItem, inTx)
	for i, item := range entries[:inTx] {
		extra[i] = types.TransactWriteItem{Put: &types.Put{TableName: aws.String(l.table), Item: item}}
	}
	if err := l.transact(ctx, ops, extra, token); err != nil {
		return err
	}
	rec.Version = ops[0].want + 1
	for _, item := range entries[inTx:] {
		res, err := l.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(l.table), Item: item, ReturnConsumedCapacity: l.capacity,
		}, l.opts)
		if err != nil {
			l.count("PutItem", 0)
			return fmt.Errorf("dynamoledger: put %s/%q: recorded; duplicate-index entry %s: %w", rec.Mailbox, rec.UIDL, stringAttr(item, attrSK), err)
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
				At: at, Expires: expires}
			for _, given := range want[it.Recipient] {
				out[given] = a
			}
		}
	}
	return out, nil
}
