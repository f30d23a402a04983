package dynamoledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// Claim items; see the package doc. They have a partition of their own
// (not the index's "MID#" one) so that the index's Query never reads them,
// and builds from before claims, which read every item of that partition
// as an index entry, never meet one.
const (
	claimPKPrefix = "CLAIM#"
	claimSKPrefix = "FP#"
)

// claimItem is one delivery claim as stored. The instants are Unix
// nanoseconds, so the condition can compare them as numbers and a
// takeOver's At matches exactly.
type claimItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	MessageID   string `dynamodbav:"message_id"`
	Fingerprint string `dynamodbav:"fingerprint"`
	Mailbox     string `dynamodbav:"mailbox"`
	UIDL        string `dynamodbav:"uidl"`
	At          int64  `dynamodbav:"at_ns"`
	Expires     int64  `dynamodbav:"expires_ns"`
	TTL         int64  `dynamodbav:"ttl"` // epoch seconds, Expires rounded up
}

func claimKey(id, fingerprint string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: &types.AttributeValueMemberS{Value: claimPKPrefix + id},
		attrSK: &types.AttributeValueMemberS{Value: claimSKPrefix + fingerprint},
	}
}

func decodeClaim(av map[string]types.AttributeValue) (ledger.Claim, error) {
	var it claimItem
	if err := attributevalue.UnmarshalMap(av, &it); err != nil {
		return ledger.Claim{}, err
	}
	if it.PK != claimPKPrefix+it.MessageID || it.SK != claimSKPrefix+it.Fingerprint {
		return ledger.Claim{}, fmt.Errorf("key %q/%q does not match Message-ID %q and fingerprint %q", it.PK, it.SK, it.MessageID, it.Fingerprint)
	}
	return ledger.Claim{MessageID: it.MessageID, Fingerprint: it.Fingerprint, Mailbox: it.Mailbox, UIDL: it.UIDL,
		At: time.Unix(0, it.At).UTC(), Expires: time.Unix(0, it.Expires).UTC()}, nil
}

// Claim takes the delivery claim c with one conditional PutItem (see
// ledger.Ledger.Claim): its condition is the claim's whole rule, so of
// claimants racing for one key exactly one succeeds. A failed condition
// returns the stored claim, from the item DynamoDB sends back with the
// failure. A retry after a lost answer succeeds by the same condition (the
// stored claim is then the claimant's own). Throttling and 5xx answers are
// retried by the client, as for every request.
func (l *Ledger) Claim(ctx context.Context, c ledger.Claim, takeOver *ledger.Claim) (ledger.Claim, error) {
	if err := l.ready(ctx, "claim"); err != nil {
		return ledger.Claim{}, err
	}
	id, err := c.Validate()
	if err != nil {
		return ledger.Claim{}, fmt.Errorf("dynamoledger: %w", err)
	}
	key := claimKey(id, c.Fingerprint)
	item, err := attributevalue.MarshalMap(claimItem{
		PK: claimPKPrefix + id, SK: claimSKPrefix + c.Fingerprint,
		MessageID: id, Fingerprint: c.Fingerprint, Mailbox: c.Mailbox, UIDL: c.UIDL,
		At: c.At.UnixNano(), Expires: c.Expires.UnixNano(), TTL: ttlAt(c.Expires),
	})
	if err != nil {
		return ledger.Claim{}, fmt.Errorf("dynamoledger: claim %q: %w", id, err)
	}
	cond := "attribute_not_exists(#pk) OR #exp <= :at OR (#mb = :mb AND #uidl = :uidl)"
	names := map[string]string{"#pk": attrPK, "#exp": "expires_ns", "#mb": "mailbox", "#uidl": "uidl"}
	values := map[string]types.AttributeValue{
		":at":   numberValue(c.At.UnixNano()),
		":mb":   &types.AttributeValueMemberS{Value: c.Mailbox},
		":uidl": &types.AttributeValueMemberS{Value: c.UIDL},
	}
	if takeOver != nil {
		cond += " OR (#mb = :tmb AND #uidl = :tuidl AND #at = :tat)"
		names["#at"] = "at_ns"
		values[":tmb"] = &types.AttributeValueMemberS{Value: takeOver.Mailbox}
		values[":tuidl"] = &types.AttributeValueMemberS{Value: takeOver.UIDL}
		values[":tat"] = numberValue(takeOver.At.UnixNano())
	}
	in := l.conditionalPut(item, cond, names, values)
	for attempt := 1; ; attempt++ {
		res, err := l.client.PutItem(ctx, in, l.opts)
		if err == nil {
			l.count("PutItem", 1, one(res.ConsumedCapacity)...)
			return c, nil
		}
		l.count("PutItem", 0)
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			return ledger.Claim{}, fmt.Errorf("dynamoledger: claim %q: %w", id, err)
		}
		stored := ccf.Item
		if stored == nil {
			// Not sent back (DynamoDB always does for ALL_OLD; a proxy or
			// an emulator might not): read it.
			if stored, err = l.getClaim(ctx, key); err != nil {
				return ledger.Claim{}, fmt.Errorf("dynamoledger: claim %q: %w", id, err)
			}
		}
		if stored != nil {
			held, err := decodeClaim(stored)
			if err != nil {
				return ledger.Claim{}, fmt.Errorf("dynamoledger: claim %q: undecodable item: %w", id, err)
			}
			return held, fmt.Errorf("dynamoledger: claim %q fingerprint %q: %w: held by %s/%q since %s until %s", id, c.Fingerprint,
				ledger.ErrClaimHeld, held.Mailbox, held.UIDL, held.At.Format(time.RFC3339Nano), held.Expires.Format(time.RFC3339Nano))
		}
		// The item is gone (removed by its ttl) between the condition and
		// the read: the claim is free, try again.
		if attempt >= l.maxAttempts {
			return ledger.Claim{}, fmt.Errorf("dynamoledger: claim %q: condition failed %d times on an item that is then absent", id, attempt)
		}
	}
}

// getClaim reads a claim item with a strongly consistent GetItem; nil
// when absent.
func (l *Ledger) getClaim(ctx context.Context, key map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
	out, err := l.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(l.table), Key: key, ConsistentRead: aws.Bool(true), ReturnConsumedCapacity: l.capacity,
	}, l.opts)
	if err != nil {
		return nil, err
	}
	l.count("GetItem", 0, one(out.ConsumedCapacity)...)
	return out.Item, nil
}
