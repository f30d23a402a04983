package lambdafn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/popconnector/popconnector/internal/config"
)

// DefaultConfigSource is the configuration bundled in the deployment
// package (the Lambda task root is /var/task).
const DefaultConfigSource = "file:/var/task/popconn.yaml"

// maxConfigBytes bounds a configuration read from S3 or SSM, like
// config.Load does for a file: a configuration is a few kilobytes.
const maxConfigBytes = 4 << 20

// S3GetAPI is the part of the S3 client that reads an s3:// configuration.
type S3GetAPI interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// ConfigLoader reads the YAML configuration from one of the places
// POPCONN_CONFIG may name:
//
//	file:/path           a file (the default, file:/var/task/popconn.yaml)
//	s3://bucket/key      an S3 object
//	ssm:/param/name      an SSM parameter (String or SecureString, decrypted)
//
// The content is the same YAML as in local mode and is validated the same
// way (config.Parse).
type ConfigLoader struct {
	S3  S3GetAPI // needed for s3://
	SSM SSMAPI   // needed for ssm:
}

// Load reads and parses the configuration at source.
func (l ConfigLoader) Load(ctx context.Context, source string) (*config.Config, error) {
	if source == "" {
		source = DefaultConfigSource
	}
	scheme, rest, _ := strings.Cut(source, ":")
	switch scheme {
	case "file":
		if rest == "" {
			return nil, fmt.Errorf("config source %q: file: needs a path", source)
		}
		return config.Load(rest)
	case "s3":
		bucket, key, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
		if !strings.HasPrefix(rest, "//") || !ok || bucket == "" || key == "" {
			return nil, fmt.Errorf("config source %q: want s3://bucket/key", source)
		}
		if l.S3 == nil {
			return nil, fmt.Errorf("config source %s: no S3 client", source)
		}
		data, err := l.readS3(ctx, bucket, key)
		if err != nil {
			return nil, fmt.Errorf("config source %s: %w", source, err)
		}
		return parse(source, data)
	case "ssm":
		if rest == "" {
			return nil, fmt.Errorf("config source %q: ssm: needs a parameter name", source)
		}
		if l.SSM == nil {
			return nil, fmt.Errorf("config source %s: no SSM client", source)
		}
		v, err := getParameter(ctx, l.SSM, rest)
		if err != nil {
			return nil, fmt.Errorf("config source %s: %w", source, err)
		}
		if len(v) > maxConfigBytes {
			return nil, fmt.Errorf("config source %s: larger than %d bytes", source, maxConfigBytes)
		}
		return parse(source, []byte(v))
	default:
		return nil, fmt.Errorf("config source %q: want file:/path, s3://bucket/key or ssm:/parameter/name", source)
	}
}

func (l ConfigLoader) readS3(ctx context.Context, bucket, key string) ([]byte, error) {
	out, err := l.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("s3 GetObject: %w", err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("s3 GetObject: read: %w", err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigBytes)
	}
	return data, nil
}

// parse is config.Parse with the source named in the error, as
// config.Load does for a file.
func parse(source string, data []byte) (*config.Config, error) {
	c, err := config.Parse(data)
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) && len(*errs) > 1 {
			return nil, fmt.Errorf("config %s: %d problems:\n%w", source, len(*errs), err)
		}
		return nil, fmt.Errorf("config %s: %w", source, err)
	}
	return c, nil
}
