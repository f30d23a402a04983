package dynamoledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// ErrTableDesign reports a table whose key schema is not the ledger's.
var ErrTableDesign = errors.New("dynamoledger: table does not have the ledger's key schema (pk S HASH, sk S RANGE)")

// CreateTable creates the ledger's table as the package doc describes it
// (on-demand billing, TTL on "ttl"), for tests and development; production
// tables come from the SAM template. It waits until the table is ACTIVE. A
// table that exists already is accepted if its key schema is right, and
// gets TTL enabled if it lacks it.
func CreateTable(ctx context.Context, client *dynamodb.Client, table string) error {
	_, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(attrSK), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
		},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("dynamoledger: create table %s: %w", table, err)
	}
	waiter := dynamodb.NewTableExistsWaiter(client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = time.Second, 5*time.Second
	})
	if err := waiter.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 5*time.Minute); err != nil {
		return fmt.Errorf("dynamoledger: create table %s: waiting until active: %w", table, err)
	}
	if err := CheckTable(ctx, client, table); err != nil {
		return err
	}
	ttl, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil {
		return fmt.Errorf("dynamoledger: create table %s: %w", table, err)
	}
	if d := ttl.TimeToLiveDescription; d != nil && (d.TimeToLiveStatus == types.TimeToLiveStatusEnabled || d.TimeToLiveStatus == types.TimeToLiveStatusEnabling) {
		if aws.ToString(d.AttributeName) != attrTTL {
			return fmt.Errorf("dynamoledger: table %s has TTL on attribute %q, the ledger writes %q", table, aws.ToString(d.AttributeName), attrTTL)
		}
		return nil
	}
	_, err = client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrTTL), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("dynamoledger: create table %s: enable TTL: %w", table, err)
	}
	return nil
}

// CheckTable verifies that table exists and has the ledger's key schema; a
// wrong schema gives an error wrapping ErrTableDesign. It does not check
// TTL: without it deleted records are merely kept for ever.
func CheckTable(ctx context.Context, client *dynamodb.Client, table string) error {
	out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		return fmt.Errorf("dynamoledger: table %s: %w", table, err)
	}
	t := out.Table
	attrTypes := map[string]types.ScalarAttributeType{}
	for _, a := range t.AttributeDefinitions {
		attrTypes[aws.ToString(a.AttributeName)] = a.AttributeType
	}
	want := []types.KeySchemaElement{
		{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
		{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
	}
	ok := len(t.KeySchema) == len(want)
	for i := 0; ok && i < len(want); i++ {
		name := aws.ToString(t.KeySchema[i].AttributeName)
		ok = name == aws.ToString(want[i].AttributeName) && t.KeySchema[i].KeyType == want[i].KeyType &&
			attrTypes[name] == types.ScalarAttributeTypeS
	}
	if !ok {
		var got []string
		for _, k := range t.KeySchema {
			name := aws.ToString(k.AttributeName)
			got = append(got, fmt.Sprintf("%s %s %s", name, attrTypes[name], k.KeyType))
		}
		return fmt.Errorf("%w: table %s has %v", ErrTableDesign, table, got)
	}
	return nil
}
