// Package lambdafn is the AWS Lambda function of popconn: the handler
// logic, separate from the Lambda runtime so that it runs in-process in
// tests (functions/poller only wires AWS clients and calls lambda.Start).
//
// One invocation polls mailboxes once: every enabled mailbox for an
// EventBridge Scheduled Event, the named ones for {"mailboxes":[...]}, and
// those its jobs name for an SQS batch event. It returns a Summary per
// mailbox, logs slog JSON to stdout (with the Powertools keys cold_start,
// function_name, request_id) and writes CloudWatch EMF metrics lines to
// stdout: one per mailbox poll (metrics.PollEMF) and one per invocation
// (metrics.InvocationEMF).
//
// Two modes. Single: the schedule invokes one function, which polls every
// mailbox (ParallelMailboxes at a time). Fan-out (Options.JobQueueURL
// set on the scheduled function): the scheduled invocation is a
// dispatcher that queues one Job per mailbox to an SQS FIFO queue
// (MessageGroupId the mailbox, MessageDeduplicationId mailbox plus tick),
// and workers, fed by the queue's event source mapping, poll them
// (queue.go).
//
// Guarantees:
//   - The configuration (same YAML as local mode) is read once per
//     container, at the first invocation, from POPCONN_CONFIG: file:/path
//     (default file:/var/task/popconn.yaml), s3://bucket/key or
//     ssm:/param/name. Its archive and ledger sections are ignored: storage
//     is the S3 bucket and DynamoDB table the environment names. A failed
//     load is not cached; the next invocation tries again.
//   - Secrets (ssm:, secretsmanager:, env:, file:) are fetched when a
//     connection first needs them and cached for the life of the container.
//     No secret value is put in the environment, a log line, an error or the
//     Summary.
//   - The poll stops starting new messages while enough of the Lambda
//     deadline remains to finish the message in flight, QUIT and record the
//     outcome: the poll's context ends Reserve (default 10s) before the
//     deadline Lambda gives the invocation, and the connector's budget check
//     keeps 2×delivery.timeout+5s of what is left in hand. The POP3 session
//     always ends with QUIT when the connection allows.
//   - A retry of the same event (Lambda's asynchronous retries, after a
//     timeout or crash) or two overlapping invocations deliver each message
//     once, apart from the one window the connector accepts (a crash
//     between DATA's 250 reply and its ledger record): the DynamoDB lease
//     admits one poller per mailbox, each invocation leases under its own
//     owner id, and every ledger write is conditional. An invocation that
//     finds the lease held reports the mailbox busy, not failed.
//   - A mailbox that fails (server down, bad password, S3 or DynamoDB
//     error) is reported in the Summary, logs and metrics without failing
//     the invocation: a Lambda retry would not help, the next scheduled
//     invocation is the retry. The invocation fails only for an event it
//     cannot serve (EventError), an unusable configuration (StartError)
//     or a dispatcher that could not queue every job.
//   - For an SQS event, only a job whose mailbox met an infrastructure
//     fault (S3, DynamoDB, an internal error) is named in
//     batchItemFailures and received again; a mailbox's own failure
//     consumes its job, so its FIFO group is not blocked for a
//     visibility timeout. A whole-invocation failure (StartError, a
//     crash, a timeout) leaves every job of the batch to the queue.
//
// What it cannot do: a secret rotated while a container is warm is seen
// only by new containers. If Lambda kills the function anyway (a server
// hanging past every timeout, out of memory), nothing here runs: the
// ledger keeps the state, and the dead invocation's lease, renewed every
// 30 s while it ran, expires at most connector.DefaultLeaseTerm (90 s)
// later; until then later invocations report the mailbox busy.
package lambdafn

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/popconnector/popconnector/internal/app"
	"github.com/popconnector/popconnector/internal/config"
	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/metrics"
)

// DefaultReserve is how long before the Lambda deadline the poll's own
// deadline falls: time for the QUIT, the last ledger writes, the lease
// release, the metrics and the response after the connector stopped.
const DefaultReserve = 10 * time.Second

// DefaultMetricsNamespace is the CloudWatch namespace of the EMF metrics.
const DefaultMetricsNamespace = "PopConnector"

// Options configures a Function.
type Options struct {
	// ConfigSource is where the YAML configuration is read from
	// (POPCONN_CONFIG); "" means DefaultConfigSource.
	ConfigSource string
	// Loader reads s3:// and ssm: configuration sources.
	Loader ConfigLoader
	// Stores are the S3 archive and the DynamoDB ledger (see AWSStores).
	// Both are required: the configuration's archive and ledger sections
	// are not used in AWS mode.
	Stores app.Stores
	// SecretsManager and SSM resolve secretsmanager: and ssm: references.
	SecretsManager SecretsManagerAPI
	SSM            SSMAPI
	// MetricsNamespace defaults to DefaultMetricsNamespace.
	MetricsNamespace string
	// Reserve defaults to DefaultReserve; it is clamped to a quarter of
	// the time an invocation has, so a short deadline still polls.
	Reserve time.Duration
	// Stdout receives the JSON logs and the EMF lines; default os.Stdout.
	Stdout io.Writer
	// Now is the clock for metrics timestamps; default time.Now.
	Now func() time.Time
	// JobQueueURL (POPCONN_JOB_QUEUE_URL) makes the Function a dispatcher
	// in fan-out mode: a scheduled event queues one Job per enabled
	// mailbox there (through SQS) instead of polling them. Empty: single
	// mode, the scheduled event polls every mailbox here.
	JobQueueURL string
	SQS         SQSAPI
	// PerMailboxMetrics (POPCONN_PER_MAILBOX_METRICS) declares the
	// per-mailbox values of each poll's EMF line as CloudWatch metrics
	// (one custom metric per value and mailbox); off, they are log
	// properties only, for metric filters and Logs Insights.
	PerMailboxMetrics bool
}

// Function handles invocations. It is safe for concurrent use (Lambda's
// multi-concurrency mode); each invocation gets its own lease owner.
type Function struct {
	opts Options
	out  *lineWriter

	mu     sync.Mutex
	app    *app.App // built at the first successful invocation
	logger *slog.Logger
	warm   atomic.Bool // an invocation ran in this container: the next is not a cold start
}

// New checks opts and returns a Function. Nothing is read or fetched
// until the first invocation.
func New(opts Options) (*Function, error) {
	if opts.Stores.Archive == nil || opts.Stores.Ledger == nil {
		return nil, errors.New("lambdafn: an archive and a ledger are required")
	}
	if opts.ConfigSource == "" {
		opts.ConfigSource = DefaultConfigSource
	}
	if opts.MetricsNamespace == "" {
		opts.MetricsNamespace = DefaultMetricsNamespace
	}
	if opts.Reserve <= 0 {
		opts.Reserve = DefaultReserve
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Loader.SSM == nil {
		opts.Loader.SSM = opts.SSM
	}
	if opts.JobQueueURL != "" && opts.SQS == nil {
		return nil, errors.New("lambdafn: a job queue needs an SQS client")
	}
	out := &lineWriter{w: opts.Stdout}
	f := &Function{opts: opts, out: out, logger: newLogger(out, slog.LevelInfo)}
	return f, nil
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// lineWriter serialises writes, so that log records and EMF lines from
// concurrent invocations never interleave within a line. Every writer
// hands it whole lines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// ready returns the App, building it on first use: configuration load,
// secrets resolvers, wiring. A failure is returned and not cached.
func (f *Function) ready(ctx context.Context) (*app.App, *slog.Logger, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.app != nil {
		return f.app, f.logger, nil
	}
	cfg, err := f.opts.Loader.Load(ctx, f.opts.ConfigSource)
	if err != nil {
		return nil, f.logger, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		level = slog.LevelInfo
	}
	logger := newLogger(f.out, level)
	for _, w := range cfg.Warnings() {
		logger.Warn("configuration warning", "warning", w)
	}
	secrets := config.NewSecrets()
	RegisterAWSResolvers(secrets, f.opts.SecretsManager, f.opts.SSM)
	a, err := app.Build(cfg, f.opts.Stores, secrets)
	if err != nil {
		return nil, logger, fmt.Errorf("lambdafn: %w", err)
	}
	a.SetLogger(logger)
	enabled := make([]string, len(a.Mailboxes))
	for i, m := range a.Mailboxes {
		enabled[i] = m.ID
	}
	logger.Info("configuration loaded", "source", f.opts.ConfigSource, "mailboxes", enabled, "delivery", cfg.Delivery.Addr())
	f.app, f.logger = a, logger
	return a, logger, nil
}

// Handle is the Lambda handler: lambda.Start(f.Handle).
func (f *Function) Handle(ctx context.Context, ev Event) (*Summary, error) {
	reqID := ""
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		reqID = lc.AwsRequestID
	}
	a, logger, err := f.ready(ctx)
	logger = logger.With(f.invocationAttrs(ctx, reqID)...)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return nil, &StartError{err}
	}
	sum := &Summary{RequestID: reqID, Trigger: ev.Trigger}
	if ev.Trigger == TriggerSchedule && f.opts.JobQueueURL != "" {
		return f.handleDispatch(ctx, a, ev, sum, logger)
	}
	mailboxes, jobsOf, err := selectMailboxes(a, ev, logger)
	if err != nil {
		logger.Error("bad event", "err", err)
		return nil, err
	}

	// Each invocation is its own poller: a lease owner that no other
	// invocation shares, even in the same container or process.
	c := a.Connector.ForPoller(logger, leaseOwner(reqID))

	pctx, cancel := f.pollContext(ctx)
	defer cancel()
	logger.Info("poll start", "trigger", ev.Trigger, "mailboxes", ids(mailboxes), "deadline_in", remaining(pctx))
	started := time.Now()
	results := c.PollAll(pctx, mailboxes, a.Config.ParallelMailboxes)
	pollTime := time.Since(started)

	sum.Mailboxes = make([]MailboxSummary, 0, len(results))
	now := f.opts.Now()
	for _, r := range results {
		ms := summarize(r)
		sum.Mailboxes = append(sum.Mailboxes, ms)
		attrs := []any{"mailbox", ms.Mailbox, "outcome", metrics.Outcome(r), "on_server", ms.OnServer, "fetched", ms.Fetched, "bytes", ms.Bytes,
			"delivered", ms.Delivered, "deferred", ms.Deferred, "rejected", ms.Rejected, "gave_up", ms.GaveUp,
			"deleted", ms.Deleted, "not_due", ms.NotDue, "badmail", ms.Badmail, "notices", ms.Notices,
			"unrecorded_replies", ms.UnrecordedReplies, "duration_ms", ms.DurationMS}
		if ms.Stopped != "" {
			sum.Stopped++
			attrs = append(attrs, "stopped", ms.Stopped)
		}
		if ev.Trigger == TriggerQueue && infrastructureFault(r.Err) {
			// The queue's retry is worth it: the job is received again
			// after its visibility timeout (and goes to the dead-letter
			// queue after maxReceiveCount).
			for _, id := range jobsOf[r.Mailbox] {
				sum.BatchItemFailures = append(sum.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: id})
			}
			attrs = append(attrs, "job_retried", true)
		}
		switch {
		case ms.Busy:
			sum.Busy++
			logger.Info("poll skipped: another invocation holds the mailbox", attrs...)
		case ms.Error != "":
			sum.Failed++
			logger.Error("poll failed", append(attrs, "err", ms.Error)...)
		default:
			logger.Info("poll done", attrs...)
		}
		var line bytes.Buffer
		if err := metrics.PollEMF(&line, f.opts.MetricsNamespace, r, now, metrics.PollOptions{PerMailboxMetrics: f.opts.PerMailboxMetrics}); err != nil {
			logger.Warn("metrics not written", "mailbox", r.Mailbox, "err", err)
			continue
		}
		f.out.Write(line.Bytes())
	}
	f.invocationMetrics(ctx, logger, metrics.Invocation{RequestID: reqID, Trigger: string(ev.Trigger), Results: results, Duration: pollTime})
	return sum, nil
}

// handleDispatch queues one job per enabled mailbox (fan-out mode).
func (f *Function) handleDispatch(ctx context.Context, a *app.App, ev Event, sum *Summary, logger *slog.Logger) (*Summary, error) {
	tick := tickOf(ev, f.opts.Now())
	started := time.Now()
	n, err := f.dispatch(ctx, a.Mailboxes, tick)
	sum.Dispatched = n
	logger.Info("dispatch done", "tick", tick.Format(time.RFC3339), "mailboxes", len(a.Mailboxes), "dispatched", n,
		"duration_ms", time.Since(started).Milliseconds())
	f.invocationMetrics(ctx, logger, metrics.Invocation{RequestID: sum.RequestID, Trigger: "dispatch", Duration: time.Since(started)})
	if err != nil {
		// Failing the invocation makes Lambda retry it; the deduplication
		// ids keep the jobs already queued from being queued twice.
		logger.Error("dispatch failed", "err", err)
		return nil, err
	}
	return sum, nil
}

// invocationMetrics writes the invocation's EMF line.
func (f *Function) invocationMetrics(ctx context.Context, logger *slog.Logger, inv metrics.Invocation) {
	if dl, ok := ctx.Deadline(); ok {
		inv.Deadline = dl
	}
	var line bytes.Buffer
	if err := metrics.InvocationEMF(&line, f.opts.MetricsNamespace, inv, f.opts.Now()); err != nil {
		logger.Warn("metrics not written", "err", err)
		return
	}
	f.out.Write(line.Bytes())
}

// invocationAttrs are the keys every log line of an invocation carries,
// named as AWS Lambda Powertools names them, so that the queries and
// dashboards written for Powertools functions work here: cold_start,
// function_name, function_memory_size, request_id and, when X-Ray traces
// the invocation, xray_trace_id.
func (f *Function) invocationAttrs(ctx context.Context, reqID string) []any {
	attrs := []any{"cold_start", !f.warm.Swap(true), "function_name", lambdacontext.FunctionName,
		"function_memory_size", lambdacontext.MemoryLimitInMB, "request_id", reqID}
	if id, ok := ctx.Value("x-amzn-trace-id").(string); ok && id != "" {
		attrs = append(attrs, "xray_trace_id", id)
	}
	return attrs
}

// pollContext ends Reserve before the invocation's deadline, so that the
// connector's own budget check (which keeps time for one SMTP exchange and
// QUIT) counts from a point that still leaves time for the cleanup.
func (f *Function) pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	reserve := min(f.opts.Reserve, time.Until(dl)/4)
	return context.WithDeadline(ctx, dl.Add(-reserve))
}

func remaining(ctx context.Context) string {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl).Round(time.Millisecond).String()
	}
	return "none"
}

// selectMailboxes returns the enabled mailboxes for a scheduled event,
// the named ones, in the order named, for a manual one, and those the
// jobs of a queue event name, each once, with the ids of the jobs that
// named it. A queue event's job that cannot be served (unreadable, or
// naming a mailbox no longer configured) is logged and consumed: its
// retry could not serve it either.
func selectMailboxes(a *app.App, ev Event, logger *slog.Logger) ([]connector.Mailbox, map[string][]string, error) {
	switch ev.Trigger {
	case TriggerSchedule:
		return a.Mailboxes, nil, nil
	case TriggerManual, TriggerQueue:
	default:
		return nil, nil, badEvent("%s", wantShapes)
	}
	byID := make(map[string]connector.Mailbox, len(a.Mailboxes))
	valid := make([]string, 0, len(a.Mailboxes))
	for _, m := range a.Mailboxes {
		byID[m.ID] = m
		valid = append(valid, m.ID)
	}
	slices.Sort(valid)
	if ev.Trigger == TriggerQueue {
		var out []connector.Mailbox
		jobsOf := map[string][]string{}
		for _, j := range ev.Jobs {
			if j.Err != nil {
				logger.Error("job consumed unserved", "message_id", j.MessageID, "err", j.Err)
				continue
			}
			for _, id := range j.Job.Mailboxes {
				m, ok := byID[id]
				if !ok {
					logger.Warn("job consumed unserved: mailbox not configured (or disabled) any more", "message_id", j.MessageID, "mailbox", id)
					continue
				}
				if _, seen := jobsOf[id]; !seen {
					out = append(out, m)
				}
				jobsOf[id] = append(jobsOf[id], j.MessageID)
			}
		}
		return out, jobsOf, nil
	}
	var out []connector.Mailbox
	var unknown []string
	for _, id := range ev.Mailboxes {
		m, ok := byID[id]
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%q%s", id, disabledNote(a.Config, id)))
			continue
		}
		out = append(out, m)
	}
	if len(unknown) > 0 {
		return nil, nil, &EventError{fmt.Errorf("%w %s; valid ids: %s", ErrUnknownMailbox, strings.Join(unknown, ", "), strings.Join(valid, ", "))}
	}
	return out, nil, nil
}

// ErrUnknownMailbox reports a manual event naming a mailbox that is not
// configured (or not enabled).
var ErrUnknownMailbox = errors.New("lambdafn: unknown mailbox")

func disabledNote(cfg *config.Config, id string) string {
	for _, m := range cfg.Mailboxes {
		if m.ID == id && !m.Enabled {
			return " (disabled in the configuration)"
		}
	}
	return ""
}

func ids(ms []connector.Mailbox) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// leaseOwner names this invocation as a lease holder: the container's log
// stream (unique per execution environment) and the request id. Two
// invocations that overlap never share both: concurrent invocations run in
// different environments or, in one environment, have different request
// ids. (Lambda starts a retry only after the previous attempt ended.)
func leaseOwner(reqID string) string {
	if reqID == "" {
		var b [8]byte
		rand.Read(b[:])
		reqID = "local-" + hex.EncodeToString(b[:])
	}
	stream := lambdacontext.LogStreamName
	if stream == "" {
		stream, _ = os.Hostname()
	}
	return "lambda:" + stream + "/" + reqID
}
