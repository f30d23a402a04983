package dynamoledger

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/popconnector/popconnector/internal/ledger"
)

// leaseItemTTL is how long after its expiry an abandoned lease item stays.
const leaseItemTTL = 24 * time.Hour

// Lease takes mailbox's lease for owner until now+ttl, if nobody holds it,
// its holder's time ran out, or owner already holds it: one conditional
// PutItem. Owners must be unique per poller (a random or host/PID token):
// one owner renewing another's lease is exactly what an owner name cannot
// detect.
func (l *Ledger) Lease(ctx context.Context, mailbox, owner string, ttl time.Duration) (ledger.Lease, error) {
	if err := l.ready(ctx, "lease"); err != nil {
		return nil, err
	}
	if err := validMailbox(mailbox); err != nil {
		return nil, err
	}
	if owner == "" {
		return nil, errors.New("dynamoledger: lease: empty owner")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("dynamoledger: lease: ttl %s is not positive", ttl)
	}
	now := l.now()
	expires := now.Add(ttl)
	item := map[string]types.AttributeValue{
		attrPK:      &types.AttributeValueMemberS{Value: pkOf(mailbox)},
		attrSK:      &types.AttributeValueMemberS{Value: skLease},
		attrOwner:   &types.AttributeValueMemberS{Value: owner},
		attrExpires: numberValue(expires.UnixMilli()),
		attrTTL:     numberValue(expires.Add(leaseItemTTL).Unix()),
	}
	res, err := l.client.PutItem(ctx, l.conditionalPut(item, "attribute_not_exists(#pk) OR #e < :now OR #o = :me",
		map[string]string{"#pk": attrPK, "#e": attrExpires, "#o": attrOwner},
		map[string]types.AttributeValue{
			":now": numberValue(now.UnixMilli()),
			":me":  &types.AttributeValueMemberS{Value: owner},
		}), l.opts)
	if err != nil {
		l.count("PutItem", 0)
		var ccf *types.ConditionalCheckFailedException
		if errors.As(err, &ccf) {
			return nil, fmt.Errorf("dynamoledger: lease: %w: %s", ledger.ErrLeaseHeld, holder(mailbox, ccf.Item))
		}
		return nil, fmt.Errorf("dynamoledger: lease %s: %w", mailbox, err)
	}
	l.count("PutItem", 1, one(res.ConsumedCapacity)...)
	return &lease{l: l, mailbox: mailbox, owner: owner, ttl: ttl}, nil
}

// holder describes who holds a lease, from its item (nil when absent).
func holder(mailbox string, item map[string]types.AttributeValue) string {
	if item == nil {
		return fmt.Sprintf("mailbox %s: lease gone (taken and released by another poller)", mailbox)
	}
	until := time.UnixMilli(numberAttr(item, attrExpires)).UTC().Format(time.RFC3339)
	return fmt.Sprintf("mailbox %s held by %q until %s", mailbox, stringAttr(item, attrOwner), until)
}

type lease struct {
	l        *Ledger
	mailbox  string
	owner    string
	ttl      time.Duration
	released atomic.Bool
}

func (le *lease) key() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: &types.AttributeValueMemberS{Value: pkOf(le.mailbox)},
		attrSK: &types.AttributeValueMemberS{Value: skLease},
	}
}

// Renew extends the lease to now+ttl with an UpdateItem on condition that
// this owner still holds it. A lease that expired but was not taken is
// simply extended. It fails with ErrLeaseHeld when another owner took the
// lease, and also when the lease item is gone (another poller took and
// released it meanwhile: this poller's hold was broken even if nobody
// holds the lease now).
func (le *lease) Renew(ctx context.Context) error {
	if le.released.Load() {
		return fmt.Errorf("dynamoledger: renew %s: lease already released", le.mailbox)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dynamoledger: renew %s: %w", le.mailbox, err)
	}
	l := le.l
	expires := l.now().Add(le.ttl)
	res, err := l.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(l.table),
		Key:                      le.key(),
		UpdateExpression:         aws.String("SET #e = :exp, #t = :ttl"),
		ConditionExpression:      aws.String("#o = :me"),
		ExpressionAttributeNames: map[string]string{"#e": attrExpires, "#t": attrTTL, "#o": attrOwner},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":exp": numberValue(expires.UnixMilli()),
			":ttl": numberValue(expires.Add(leaseItemTTL).Unix()),
			":me":  &types.AttributeValueMemberS{Value: le.owner},
		},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		ReturnConsumedCapacity:              l.capacity,
	}, l.opts)
	if err != nil {
		l.count("UpdateItem", 0)
		var ccf *types.ConditionalCheckFailedException
		if errors.As(err, &ccf) {
			return fmt.Errorf("dynamoledger: renew: %w: lease lost: %s", ledger.ErrLeaseHeld, holder(le.mailbox, ccf.Item))
		}
		return fmt.Errorf("dynamoledger: renew %s: %w", le.mailbox, err)
	}
	l.count("UpdateItem", 1, one(res.ConsumedCapacity)...)
	return nil
}

// Release deletes the lease item on condition that this owner still holds
// it; a lease already lost or released is left alone, without error.
func (le *lease) Release(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dynamoledger: release %s: %w", le.mailbox, err)
	}
	le.released.Store(true)
	l := le.l
	res, err := l.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(l.table),
		Key:                       le.key(),
		ConditionExpression:       aws.String("#o = :me"),
		ExpressionAttributeNames:  map[string]string{"#o": attrOwner},
		ExpressionAttributeValues: map[string]types.AttributeValue{":me": &types.AttributeValueMemberS{Value: le.owner}},
		ReturnConsumedCapacity:    l.capacity,
	}, l.opts)
	if err != nil {
		l.count("DeleteItem", 0)
		var ccf *types.ConditionalCheckFailedException
		if errors.As(err, &ccf) {
			return nil // lost to another owner or already released: not ours to delete
		}
		return fmt.Errorf("dynamoledger: release %s: %w", le.mailbox, err)
	}
	l.count("DeleteItem", 1, one(res.ConsumedCapacity)...)
	return nil
}
