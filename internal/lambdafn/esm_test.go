package lambdafn_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// esm plays the Lambda event source mapping of an SQS queue, as the
// Lambda service runs it for the worker function: each poller receives up
// to batch messages, invokes a worker with them as an SQS event and, when
// the invocation succeeds, deletes every message its batchItemFailures do
// not name. A failed invocation (a function error, a timeout) deletes
// nothing: its messages come back after the visibility timeout. One
// poller per worker, as MaximumConcurrency bounds the invocations in
// flight. No local implementation of the mapping exists, hence this
// player; the queue (moto) and the function (the real bootstrap under the
// Runtime Interface Emulator) are real.
type esm struct {
	sqs        *sqs.Client
	queueURL   string
	queueARN   string
	region     string
	batch      int32
	visibility time.Duration
	workers    []invoker
}

// invoker invokes one worker with a payload and returns its response.
type invoker func(ctx context.Context, payload []byte) ([]byte, error)

// esmStats counts what the mapping did.
type esmStats struct {
	Invocations  int64
	Received     int64
	Deleted      int64
	Retried      int64 // named in batchItemFailures
	FunctionErrs int64 // invocations that failed as a whole
	Busy         time.Duration
	// LastDone is when the last job was deleted: the run itself goes on
	// until nothing is in flight, which includes waiting out the
	// visibility timeout of a job whose receive answer was lost.
	LastDone time.Time
}

// run drives the workers until the queue has been empty (nothing visible,
// nothing in flight) for a whole receive, or ctx ends.
func (e *esm) run(ctx context.Context, t testing.TB) esmStats {
	var st esmStats
	var busy, lastDone atomic.Int64
	var wg sync.WaitGroup
	for i, w := range e.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				out, err := e.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
					QueueUrl: aws.String(e.queueURL), MaxNumberOfMessages: e.batch, WaitTimeSeconds: 1,
					VisibilityTimeout:           int32(e.visibility / time.Second),
					MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
				})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("esm poller %d: receive: %v", i, err)
					}
					return
				}
				if len(out.Messages) == 0 {
					if e.drained(ctx, t) {
						return
					}
					continue
				}
				atomic.AddInt64(&st.Received, int64(len(out.Messages)))
				atomic.AddInt64(&st.Invocations, 1)
				start := time.Now()
				resp, err := w(ctx, e.event(out.Messages))
				busy.Add(int64(time.Since(start)))
				if err != nil {
					atomic.AddInt64(&st.FunctionErrs, 1)
					t.Logf("esm poller %d: invocation failed, %d messages left to the queue: %v", i, len(out.Messages), err)
					continue
				}
				var r events.SQSEventResponse
				if err := json.Unmarshal(resp, &r); err != nil {
					// Lambda treats a response it cannot read as a failure of the whole batch.
					atomic.AddInt64(&st.FunctionErrs, 1)
					t.Errorf("esm poller %d: response %q is not an SQS batch response: %v", i, resp, err)
					continue
				}
				keep := map[string]bool{}
				for _, f := range r.BatchItemFailures {
					keep[f.ItemIdentifier] = true
				}
				atomic.AddInt64(&st.Retried, int64(len(keep)))
				var del []sqstypes.DeleteMessageBatchRequestEntry
				for j, m := range out.Messages {
					if !keep[aws.ToString(m.MessageId)] {
						del = append(del, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), ReceiptHandle: m.ReceiptHandle})
					}
				}
				if len(del) == 0 {
					continue
				}
				dout, err := e.sqs.DeleteMessageBatch(context.WithoutCancel(ctx), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(e.queueURL), Entries: del})
				if err != nil || len(dout.Failed) > 0 {
					t.Errorf("esm poller %d: delete: %v %+v", i, err, dout)
					continue
				}
				atomic.AddInt64(&st.Deleted, int64(len(dout.Successful)))
				for now := time.Now().UnixNano(); ; {
					last := lastDone.Load()
					if now <= last || lastDone.CompareAndSwap(last, now) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	st.Busy = time.Duration(busy.Load())
	if n := lastDone.Load(); n != 0 {
		st.LastDone = time.Unix(0, n)
	}
	return st
}

// drained reports whether the queue holds nothing, visible or in flight.
func (e *esm) drained(ctx context.Context, t testing.TB) bool {
	out, err := e.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(e.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Errorf("esm: queue attributes: %v", err)
		return true
	}
	return out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)] == "0" &&
		out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)] == "0"
}

// event is the SQS event Lambda builds from received messages.
func (e *esm) event(msgs []sqstypes.Message) []byte {
	ev := events.SQSEvent{Records: make([]events.SQSMessage, len(msgs))}
	for i, m := range msgs {
		ev.Records[i] = events.SQSMessage{
			MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body),
			Md5OfBody: aws.ToString(m.MD5OfBody), Attributes: m.Attributes, EventSource: "aws:sqs",
			EventSourceARN: e.queueARN, AWSRegion: e.region,
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err) // only strings: cannot fail
	}
	return b
}

// createJobQueue creates the FIFO job queue and its dead-letter queue as
// template.yaml does (redrive after maxReceive receives) and returns the
// queue's URL and ARN.
func createJobQueue(t testing.TB, c *sqs.Client, name string, visibility time.Duration, maxReceive int) (url, arn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	attr := func(url string) string {
		out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
		if err != nil {
			t.Fatalf("queue attributes: %v", err)
		}
		return out.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
	}
	dlq, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq.fifo"), Attributes: map[string]string{"FifoQueue": "true"}})
	if err != nil {
		t.Fatalf("create dead-letter queue: %v", err)
	}
	redrive, _ := json.Marshal(map[string]string{"deadLetterTargetArn": attr(aws.ToString(dlq.QueueUrl)), "maxReceiveCount": strconv.Itoa(maxReceive)})
	q, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + ".fifo"), Attributes: map[string]string{
		"FifoQueue": "true", "VisibilityTimeout": strconv.Itoa(int(visibility / time.Second)), "RedrivePolicy": string(redrive)}})
	if err != nil {
		t.Fatalf("create job queue: %v", err)
	}
	return aws.ToString(q.QueueUrl), attr(aws.ToString(q.QueueUrl))
}

func queueDepth(t testing.TB, c *sqs.Client, url string) string {
	out, err := c.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll}})
	if err != nil {
		return fmt.Sprint(err)
	}
	return fmt.Sprintf("visible %s, in flight %s", out.Attributes["ApproximateNumberOfMessages"], out.Attributes["ApproximateNumberOfMessagesNotVisible"])
}
