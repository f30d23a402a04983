// Command poller is popconn's AWS Lambda function (runtime provided.al2023,
// handler binary "bootstrap"). It only wires things: it reads the
// environment (see lambdafn.Env), builds the AWS clients from the default
// configuration chain (the function's role; AWS_ENDPOINT_URL_<SERVICE> and
// AWS_CA_BUNDLE are honoured by the SDK), and hands lambdafn's handler to
// the Lambda runtime. Build:
//
//	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -tags lambda.norpc -trimpath -ldflags "-s -w" -o bootstrap ./functions/poller
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/popconnector/popconnector/internal/lambdafn"
)

func main() {
	f, err := setup(context.Background())
	if err != nil {
		// Stay up and answer every invocation with the reason, so that it
		// shows in the invocation's result as well as in the log.
		slog.New(slog.NewJSONHandler(os.Stdout, nil)).Error("cannot start", "err", err)
		lambda.Start(func(context.Context, json.RawMessage) (*lambdafn.Summary, error) { return nil, err })
		return
	}
	lambda.Start(f.Handle)
}

func setup(ctx context.Context) (*lambdafn.Function, error) {
	env, err := lambdafn.EnvFromGetenv(os.Getenv)
	if err != nil {
		return nil, err
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, err
	}
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = env.S3PathStyle })
	ssmc := ssm.NewFromConfig(cfg)
	stores, err := lambdafn.AWSStores(env, s3c, dynamodb.NewFromConfig(cfg))
	if err != nil {
		return nil, err
	}
	return lambdafn.New(lambdafn.Options{
		ConfigSource:      env.ConfigSource,
		Loader:            lambdafn.ConfigLoader{S3: s3c, SSM: ssmc},
		Stores:            stores,
		SecretsManager:    secretsmanager.NewFromConfig(cfg),
		SSM:               ssmc,
		MetricsNamespace:  env.MetricsNamespace,
		Reserve:           env.Reserve,
		JobQueueURL:       env.JobQueueURL,
		SQS:               sqs.NewFromConfig(cfg),
		PerMailboxMetrics: env.PerMailboxMetrics,
	})
}
