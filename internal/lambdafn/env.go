package lambdafn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Env is the function's configuration from its environment variables. It
// never holds a secret: passwords are references in the YAML.
type Env struct {
	ConfigSource     string        // POPCONN_CONFIG; default DefaultConfigSource
	ArchiveBucket    string        // POPCONN_ARCHIVE_BUCKET; required
	ArchivePrefix    string        // POPCONN_ARCHIVE_PREFIX; optional key prefix
	LedgerTable      string        // POPCONN_LEDGER_TABLE; required
	MetricsNamespace string        // POPCONN_METRICS_NAMESPACE; default DefaultMetricsNamespace
	Reserve          time.Duration // POPCONN_DEADLINE_RESERVE (Go duration); default DefaultReserve
	// RecordRetention (POPCONN_LEDGER_RECORD_RETENTION, Go duration) is
	// how long the ledger keeps a deleted message's record; 0 means the
	// ledger's default (dynamoledger.DefaultRecordTTL).
	RecordRetention time.Duration
	// S3PathStyle (POPCONN_S3_PATH_STYLE=true) addresses S3 as
	// endpoint/bucket/key instead of bucket.endpoint/key: needed for an
	// S3-compatible server at an IP address (tests); AWS needs neither.
	S3PathStyle bool
	// JobQueueURL (POPCONN_JOB_QUEUE_URL) makes the function the
	// dispatcher of fan-out mode (Options.JobQueueURL).
	JobQueueURL string
	// PerMailboxMetrics (POPCONN_PER_MAILBOX_METRICS=true) declares the
	// per-mailbox CloudWatch metrics (Options.PerMailboxMetrics).
	PerMailboxMetrics bool
}

// EnvFromGetenv reads Env with getenv (os.Getenv) and reports every
// missing or malformed variable at once.
func EnvFromGetenv(getenv func(string) string) (Env, error) {
	e := Env{
		ConfigSource:     strings.TrimSpace(getenv("POPCONN_CONFIG")),
		ArchiveBucket:    strings.TrimSpace(getenv("POPCONN_ARCHIVE_BUCKET")),
		ArchivePrefix:    strings.TrimSpace(getenv("POPCONN_ARCHIVE_PREFIX")),
		LedgerTable:      strings.TrimSpace(getenv("POPCONN_LEDGER_TABLE")),
		MetricsNamespace: strings.TrimSpace(getenv("POPCONN_METRICS_NAMESPACE")),
		JobQueueURL:      strings.TrimSpace(getenv("POPCONN_JOB_QUEUE_URL")),
		Reserve:          DefaultReserve,
	}
	if e.ConfigSource == "" {
		e.ConfigSource = DefaultConfigSource
	}
	if e.MetricsNamespace == "" {
		e.MetricsNamespace = DefaultMetricsNamespace
	}
	var errs []error
	if e.ArchiveBucket == "" {
		errs = append(errs, errors.New("POPCONN_ARCHIVE_BUCKET is not set (the S3 bucket of the archive)"))
	}
	if e.LedgerTable == "" {
		errs = append(errs, errors.New("POPCONN_LEDGER_TABLE is not set (the DynamoDB table of the ledger)"))
	}
	if v := strings.TrimSpace(getenv("POPCONN_DEADLINE_RESERVE")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("POPCONN_DEADLINE_RESERVE=%q: want a positive duration such as 10s", v))
		} else {
			e.Reserve = d
		}
	}
	if v := strings.TrimSpace(getenv("POPCONN_LEDGER_RECORD_RETENTION")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour {
			errs = append(errs, fmt.Errorf("POPCONN_LEDGER_RECORD_RETENTION=%q: want a duration of at least 1h such as 168h", v))
		} else {
			e.RecordRetention = d
		}
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"POPCONN_S3_PATH_STYLE", &e.S3PathStyle}, {"POPCONN_PER_MAILBOX_METRICS", &e.PerMailboxMetrics}} {
		name, dst := b.name, b.dst
		if v := strings.TrimSpace(getenv(name)); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
			}
			*dst = b
		}
	}
	if len(errs) > 0 {
		return e, fmt.Errorf("lambdafn: environment: %w", errors.Join(errs...))
	}
	return e, nil
}
