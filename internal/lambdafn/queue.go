package lambdafn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
)

// Fan-out mode: the schedule invokes a dispatcher (a Function whose
// Options.JobQueueURL is set), which sends one Job per enabled mailbox to
// an SQS FIFO queue; workers (the same Function, fed by the queue's event
// source mapping) poll the mailboxes the jobs name. The FIFO queue keeps
// a mailbox from being polled twice at once (MessageGroupId is the
// mailbox, and a group's next message waits until the one in flight is
// deleted); the mailbox lease still guards it, as it guards retrieve-now
// and the CLI, so overlap is safe even without the queue.

// Job is the body of one queue message: the mailboxes to poll and the
// schedule tick that asked for it.
type Job struct {
	Mailboxes []string  `json:"mailboxes"`
	Tick      time.Time `json:"tick"`
}

// QueuedJob is one record of an SQS batch event: its message id (what
// batchItemFailures names) and the Job, or why its body is not one.
type QueuedJob struct {
	MessageID string
	Job       Job
	// Err is set for a body that is not a Job; such a job is consumed and
	// logged (retrying it cannot make it readable).
	Err error
}

// SQSAPI is the part of the SQS client the dispatcher uses.
type SQSAPI interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// sqsBatchMax is SQS's limit on entries per SendMessageBatch.
const sqsBatchMax = 10

// dispatchParallel is how many SendMessageBatch requests the dispatcher
// keeps in flight: 10,000 mailboxes are 1,000 requests.
const dispatchParallel = 8

// decodeQueueEvent decodes an SQS batch event ({"Records":[...]} whose
// records all come from aws:sqs).
func decodeQueueEvent(data []byte) ([]QueuedJob, error) {
	var ev events.SQSEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, badEvent("malformed SQS event: %v", err)
	}
	if len(ev.Records) == 0 {
		return nil, badEvent("\"Records\" is empty; %s", wantShapes)
	}
	jobs := make([]QueuedJob, 0, len(ev.Records))
	for i, r := range ev.Records {
		if r.EventSource != "aws:sqs" {
			return nil, badEvent("record %d has eventSource %q, want aws:sqs; %s", i, r.EventSource, wantShapes)
		}
		if r.MessageId == "" {
			return nil, badEvent("record %d has no messageId", i)
		}
		q := QueuedJob{MessageID: r.MessageId}
		if err := json.Unmarshal([]byte(r.Body), &q.Job); err != nil {
			q.Err = fmt.Errorf("job body is not {\"mailboxes\":[...],\"tick\":...}: %w", err)
		} else if len(q.Job.Mailboxes) == 0 {
			q.Err = errors.New("job names no mailbox")
		}
		jobs = append(jobs, q)
	}
	return jobs, nil
}

// groupID is the FIFO message group of a mailbox's jobs: the mailbox id
// itself when SQS accepts it (up to 128 characters, letters, digits and
// punctuation), else a digest of it.
func groupID(mailbox string) string {
	ok := len(mailbox) > 0 && len(mailbox) <= 128
	for i := 0; ok && i < len(mailbox); i++ {
		ok = mailbox[i] > ' ' && mailbox[i] < 0x7f
	}
	if ok {
		return mailbox
	}
	sum := sha256.Sum256([]byte(mailbox))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// deduplicationID is the same for the same mailbox and tick, so that a
// dispatcher retried by Lambda (or two overlapping ones) queues each
// mailbox once per tick within SQS's five-minute deduplication interval.
func deduplicationID(mailbox string, tick time.Time) string {
	sum := sha256.Sum256([]byte(mailbox + "\x00" + tick.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:])
}

// tickOf is the time a scheduled event stands for: the EventBridge event's
// time, or (for the {} a Scheduler target sends) now to the minute, so a
// retry of the same invocation in the same minute deduplicates.
func tickOf(ev Event, now time.Time) time.Time {
	if ev.Schedule != nil && !ev.Schedule.Time.IsZero() {
		return ev.Schedule.Time.UTC()
	}
	return now.UTC().Truncate(time.Minute)
}

// dispatch sends one job per mailbox to the queue, dispatchParallel
// batches at a time, and reports how many were queued. Entries SQS
// refuses are sent again (up to three rounds); what is still refused
// fails the invocation, whose retry the deduplication ids make safe.
func (f *Function) dispatch(ctx context.Context, mailboxes []connector.Mailbox, tick time.Time) (int, error) {
	type batch []sqstypes.SendMessageBatchRequestEntry
	var batches []batch
	for i := 0; i < len(mailboxes); i += sqsBatchMax {
		var b batch
		for j, m := range mailboxes[i:min(i+sqsBatchMax, len(mailboxes))] {
			body, err := json.Marshal(Job{Mailboxes: []string{m.ID}, Tick: tick})
			if err != nil {
				return 0, fmt.Errorf("lambdafn: dispatch: %w", err)
			}
			b = append(b, sqstypes.SendMessageBatchRequestEntry{
				Id:                     aws.String(strconv.Itoa(j)),
				MessageBody:            aws.String(string(body)),
				MessageGroupId:         aws.String(groupID(m.ID)),
				MessageDeduplicationId: aws.String(deduplicationID(m.ID, tick)),
			})
		}
		batches = append(batches, b)
	}
	results := make(chan error, len(batches))
	sent := make(chan int, len(batches))
	work := make(chan batch)
	for w := 0; w < min(dispatchParallel, len(batches)); w++ {
		go func() {
			for b := range work {
				n, err := f.sendBatch(ctx, b)
				sent <- n
				results <- err
			}
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	total := 0
	var errs []error
	for range batches {
		total += <-sent
		if err := <-results; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return total, fmt.Errorf("lambdafn: dispatch: %d of %d jobs not queued: %w", len(mailboxes)-total, len(mailboxes), errors.Join(errs...))
	}
	return total, nil
}

// sendBatch sends entries, again for those SQS reports failed with a
// retryable (sender fault false) error, and returns how many were queued.
func (f *Function) sendBatch(ctx context.Context, entries []sqstypes.SendMessageBatchRequestEntry) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("internal error sending a batch: %v", v)
		}
	}()
	for round := 0; len(entries) > 0; round++ {
		out, err := f.opts.SQS.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(f.opts.JobQueueURL), Entries: entries})
		if err != nil {
			return n, err
		}
		n += len(out.Successful)
		byID := make(map[string]sqstypes.SendMessageBatchRequestEntry, len(entries))
		for _, e := range entries {
			byID[aws.ToString(e.Id)] = e
		}
		var again []sqstypes.SendMessageBatchRequestEntry
		var last error
		for _, fe := range out.Failed {
			last = fmt.Errorf("SQS refused a job: %s: %s", aws.ToString(fe.Code), aws.ToString(fe.Message))
			if !fe.SenderFault {
				again = append(again, byID[aws.ToString(fe.Id)])
			}
		}
		if len(again) < len(out.Failed) || (len(again) > 0 && round == 2) {
			return n, last
		}
		entries = again
		if len(entries) > 0 {
			select {
			case <-ctx.Done():
				return n, ctx.Err()
			case <-time.After(time.Duration(100<<round) * time.Millisecond):
			}
		}
	}
	return n, nil
}

// infrastructureFault reports whether a mailbox's poll failed because of
// the function's own storage (S3, DynamoDB) or an internal error, rather
// than the mailbox (its server, its password, its mail): only those are
// worth the queue's retry. A mailbox's own failure is recorded and its
// job consumed, so its FIFO group is not blocked for a visibility
// timeout; the next tick is its retry. A lease held by another poller,
// another writer's conditional write and a claim held are contention,
// not faults.
func infrastructureFault(err error) bool {
	if err == nil || errors.Is(err, ledger.ErrLeaseHeld) || errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrClaimHeld) {
		return false
	}
	var op *smithy.OperationError
	if errors.As(err, &op) {
		switch op.ServiceID {
		case "S3", "DynamoDB":
			return true
		}
	}
	return errors.Is(err, connector.ErrInternal)
}
