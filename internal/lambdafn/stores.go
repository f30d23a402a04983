package lambdafn

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/archive/s3archive"
	"github.com/popconnector/popconnector/internal/ledger/dynamoledger"
)

// AWSStores is the archive in e.ArchiveBucket (under e.ArchivePrefix) and
// the ledger in table e.LedgerTable. It sends no request: a missing bucket
// or table shows at the first poll, as that mailbox's error.
func AWSStores(e Env, s3c *s3.Client, ddb *dynamodb.Client) (app.Stores, error) {
	arc := s3archive.New(s3c, s3archive.Options{Bucket: e.ArchiveBucket, Prefix: e.ArchivePrefix})
	if err := arc.Err(); err != nil {
		return app.Stores{}, fmt.Errorf("lambdafn: archive: %w", err)
	}
	if ddb == nil {
		return app.Stores{}, fmt.Errorf("lambdafn: ledger: no DynamoDB client")
	}
	if e.LedgerTable == "" {
		return app.Stores{}, fmt.Errorf("lambdafn: ledger: no table given")
	}
	return app.Stores{Archive: arc, Ledger: dynamoledger.New(ddb, dynamoledger.Options{Table: e.LedgerTable, RecordTTL: e.RecordRetention})}, nil
}
