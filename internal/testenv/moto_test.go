package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// fifoQueue creates the FIFO queue name+".fifo" with explicit
// deduplication ids (ContentBasedDeduplication false) and returns its URL
// and ARN. extra attributes (RedrivePolicy, ...) are added.
func fifoQueue(t *testing.T, ctx context.Context, c *sqs.Client, name string, extra map[string]string) (url, arn string) {
	t.Helper()
	attrs := map[string]string{
		string(types.QueueAttributeNameFifoQueue):                 "true",
		string(types.QueueAttributeNameContentBasedDeduplication): "false",
		string(types.QueueAttributeNameVisibilityTimeout):         "30",
	}
	for k, v := range extra {
		attrs[k] = v
	}
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + ".fifo"), Attributes: attrs})
	if err != nil {
		t.Fatalf("CreateQueue %s: %v", name, err)
	}
	a, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       out.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn, types.QueueAttributeNameContentBasedDeduplication},
	})
	if err != nil {
		t.Fatalf("GetQueueAttributes %s: %v", name, err)
	}
	if a.Attributes["ContentBasedDeduplication"] != "false" {
		t.Fatalf("queue %s: ContentBasedDeduplication=%q", name, a.Attributes["ContentBasedDeduplication"])
	}
	return *out.QueueUrl, a.Attributes["QueueArn"]
}

func send(t *testing.T, ctx context.Context, c *sqs.Client, url, group, dedup, body string) string {
	t.Helper()
	out, err := c.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:               aws.String(url),
		MessageBody:            aws.String(body),
		MessageGroupId:         aws.String(group),
		MessageDeduplicationId: aws.String(dedup),
	})
	if err != nil {
		t.Fatalf("SendMessage %s/%s: %v", group, dedup, err)
	}
	return *out.MessageId
}

// sqsMsg is what a test looks at in a received message.
type sqsMsg struct {
	body, group, receipt string
	receiveCount         int
}

func receive(t *testing.T, ctx context.Context, c *sqs.Client, url string, max int32, visibility int32) []sqsMsg {
	t.Helper()
	out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            aws.String(url),
		MaxNumberOfMessages: max,
		VisibilityTimeout:   visibility,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameMessageGroupId,
			types.MessageSystemAttributeNameApproximateReceiveCount,
		},
	})
	if err != nil {
		t.Fatalf("ReceiveMessage: %v", err)
	}
	var got []sqsMsg
	for _, m := range out.Messages {
		n, _ := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
		got = append(got, sqsMsg{body: *m.Body, group: m.Attributes["MessageGroupId"], receipt: *m.ReceiptHandle, receiveCount: n})
	}
	return got
}

func bodies(ms []sqsMsg) []string {
	var b []string
	for _, m := range ms {
		b = append(b, m.body)
	}
	return b
}

func deleteAll(t *testing.T, ctx context.Context, c *sqs.Client, url string, ms []sqsMsg) {
	t.Helper()
	for _, m := range ms {
		if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: aws.String(m.receipt)}); err != nil {
			t.Fatalf("DeleteMessage %s: %v", m.body, err)
		}
	}
}

// TestMotoSQSFIFO shows which SQS FIFO behaviour the fan-out tests can rely
// on with moto 5.2.1 and aws-sdk-go-v2's sqs client (AWS JSON protocol):
//
//   - FIFO order within a message group; while a message of a group is in
//     flight (sqsMsg, not deleted, visibility not expired) the group's
//     later messages are not delivered, other groups' are (as SQS). One
//     ReceiveMessage may return several messages of one group, in order.
//     A message whose visibility expires is delivered again before its
//     group's later ones.
//   - A send without MessageDeduplicationId is refused
//     (InvalidParameterValue) when ContentBasedDeduplication is false.
//   - A repeated MessageDeduplicationId is accepted and dropped while the
//     first message is still in the queue. DEVIATION: moto forgets a
//     deduplication id when its message is deleted (or moved to the DLQ),
//     SQS keeps it for 5 minutes; and moto answers the dropped duplicate
//     with a new MessageId where SQS repeats the first one's. The id is
//     per queue (DeduplicationScope queue): another group's message with
//     the same id is dropped too.
//   - VisibilityTimeout on ReceiveMessage hides the message for that many
//     seconds; ChangeMessageVisibility 0 makes it visible at once;
//     ApproximateReceiveCount counts the receives.
//   - RedrivePolicy maxReceiveCount N: the receive after the N-th moves
//     the message to the dead-letter queue instead of returning it (as
//     SQS) and goes on with the group's next message; in the DLQ it keeps
//     its body, group and receive count.
//   - SendMessageBatch with groups and deduplication ids keeps the order.
//   - WaitTimeSeconds long-polls an empty queue for about that long.
func TestMotoSQSFIFO(t *testing.T) {
	m := StartMoto(t)
	c := m.SQSClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("OrderPerGroup", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "order", nil)
		for i, g := range []string{"A", "B", "A", "B", "A"} {
			send(t, ctx, c, url, g, fmt.Sprint("d", i), fmt.Sprintf("%s%d", g, i))
		}
		first := receive(t, ctx, c, url, 1, 30)
		if !slices.Equal(bodies(first), []string{"A0"}) || first[0].group != "A" {
			t.Fatalf("first receive %v, want A0 of group A", bodies(first))
		}
		// A0 is in flight: group A is held back, group B is not.
		rest := receive(t, ctx, c, url, 10, 30)
		if !slices.Equal(bodies(rest), []string{"B1", "B3"}) {
			t.Fatalf("receive while A0 is in flight: %v, want [B1 B3] (group A held back)", bodies(rest))
		}
		deleteAll(t, ctx, c, url, first)
		more := receive(t, ctx, c, url, 10, 30)
		if !slices.Equal(bodies(more), []string{"A2", "A4"}) {
			t.Fatalf("receive after deleting A0: %v, want [A2 A4]", bodies(more))
		}
		deleteAll(t, ctx, c, url, append(rest, more...))
		if left := receive(t, ctx, c, url, 10, 30); len(left) != 0 {
			t.Fatalf("queue not empty: %v", bodies(left))
		}
	})

	t.Run("RedeliveryKeepsGroupOrder", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "redeliver", nil)
		send(t, ctx, c, url, "G", "1", "G1")
		send(t, ctx, c, url, "G", "2", "G2")
		got := receive(t, ctx, c, url, 1, 1)
		if !slices.Equal(bodies(got), []string{"G1"}) {
			t.Fatalf("receive %v", bodies(got))
		}
		if none := receive(t, ctx, c, url, 10, 1); len(none) != 0 {
			t.Fatalf("group G delivered %v while G1 is in flight", bodies(none))
		}
		time.Sleep(1200 * time.Millisecond)
		again := receive(t, ctx, c, url, 1, 30)
		if !slices.Equal(bodies(again), []string{"G1"}) || again[0].receiveCount != 2 {
			t.Fatalf("after G1's visibility expired: %+v, want G1 sqsMsg a second time", again)
		}
	})

	t.Run("Deduplication", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "dedup", nil)
		_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("x"), MessageGroupId: aws.String("G")})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidParameterValue" {
			t.Fatalf("send without a deduplication id: %v, want InvalidParameterValue", err)
		}
		id1 := send(t, ctx, c, url, "G", "same", "first")
		id2 := send(t, ctx, c, url, "G", "same", "second") // accepted, dropped
		if id1 == id2 {
			t.Errorf("moto now repeats the first MessageId for a duplicate (as SQS): update the comment of TestMotoSQSFIFO")
		}
		send(t, ctx, c, url, "H", "same", "other group") // deduplication is per queue
		got := receive(t, ctx, c, url, 10, 30)
		if !slices.Equal(bodies(got), []string{"first"}) {
			t.Fatalf("receive %v, want only [first]: a repeated deduplication id within 5 minutes is dropped", bodies(got))
		}
		deleteAll(t, ctx, c, url, got)
		send(t, ctx, c, url, "G", "same", "after delete")
		got = receive(t, ctx, c, url, 10, 30)
		switch {
		case len(got) == 0:
			t.Errorf("moto now keeps a deduplication id after its message was deleted (as SQS): update the comment of TestMotoSQSFIFO")
		case !slices.Equal(bodies(got), []string{"after delete"}):
			t.Fatalf("receive after delete: %v", bodies(got))
		}
		deleteAll(t, ctx, c, url, got)
	})

	t.Run("Visibility", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "visibility", nil)
		send(t, ctx, c, url, "G", "1", "v")
		got := receive(t, ctx, c, url, 1, 1)
		if len(got) != 1 || got[0].receiveCount != 1 {
			t.Fatalf("receive %+v", got)
		}
		if none := receive(t, ctx, c, url, 1, 1); len(none) != 0 {
			t.Fatalf("message visible again at once: %+v", none)
		}
		time.Sleep(1200 * time.Millisecond)
		got = receive(t, ctx, c, url, 1, 30)
		if len(got) != 1 || got[0].receiveCount != 2 {
			t.Fatalf("after the visibility timeout: %+v, want the message with receive count 2", got)
		}
		if _, err := c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(url), ReceiptHandle: aws.String(got[0].receipt), VisibilityTimeout: 0}); err != nil {
			t.Fatal(err)
		}
		got = receive(t, ctx, c, url, 1, 30)
		if len(got) != 1 || got[0].receiveCount != 3 {
			t.Fatalf("after ChangeMessageVisibility 0: %+v, want it again at once", got)
		}
		deleteAll(t, ctx, c, url, got)
		if none := receive(t, ctx, c, url, 1, 30); len(none) != 0 {
			t.Fatalf("deleted message delivered: %+v", none)
		}
	})

	t.Run("Redrive", func(t *testing.T) {
		_, dlqARN := fifoQueue(t, ctx, c, "redrive-dlq", nil)
		policy, _ := json.Marshal(map[string]string{"deadLetterTargetArn": dlqARN, "maxReceiveCount": "2"})
		url, _ := fifoQueue(t, ctx, c, "redrive", map[string]string{string(types.QueueAttributeNameRedrivePolicy): string(policy)})
		dlqURL, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("redrive-dlq.fifo")})
		if err != nil {
			t.Fatal(err)
		}
		send(t, ctx, c, url, "G", "1", "poison")
		send(t, ctx, c, url, "G", "2", "next")
		for i := 1; i <= 2; i++ {
			got := receive(t, ctx, c, url, 1, 30)
			if !slices.Equal(bodies(got), []string{"poison"}) || got[0].receiveCount != i {
				t.Fatalf("receive %d: %+v", i, got)
			}
			if _, err := c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(url), ReceiptHandle: aws.String(got[0].receipt), VisibilityTimeout: 0}); err != nil {
				t.Fatal(err)
			}
		}
		// The third receive moves "poison" to the DLQ and goes on with the
		// group's next message.
		got := receive(t, ctx, c, url, 10, 30)
		if !slices.Equal(bodies(got), []string{"next"}) {
			t.Fatalf("receive after maxReceiveCount: %v, want [next]", bodies(got))
		}
		dead := receive(t, ctx, c, *dlqURL.QueueUrl, 10, 30)
		if !slices.Equal(bodies(dead), []string{"poison"}) || dead[0].group != "G" {
			t.Fatalf("DLQ holds %+v, want poison of group G", dead)
		}
		if dead[0].receiveCount != 3 {
			t.Errorf("receive count in the DLQ %d, want 3 (2 before the move, kept)", dead[0].receiveCount)
		}
	})

	t.Run("Batch", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "batch", nil)
		var entries []types.SendMessageBatchRequestEntry
		for i, g := range []string{"G", "H", "G"} {
			entries = append(entries, types.SendMessageBatchRequestEntry{
				Id:                     aws.String(fmt.Sprint("e", i)),
				MessageBody:            aws.String(fmt.Sprintf("%s%d", g, i)),
				MessageGroupId:         aws.String(g),
				MessageDeduplicationId: aws.String(fmt.Sprint("b", i)),
			})
		}
		out, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil || len(out.Successful) != 3 || len(out.Failed) != 0 {
			t.Fatalf("SendMessageBatch = %+v, %v", out, err)
		}
		got := receive(t, ctx, c, url, 10, 30)
		if !slices.Equal(bodies(got), []string{"G0", "H1", "G2"}) {
			t.Fatalf("receive %v, want [G0 H1 G2]", bodies(got))
		}
	})

	t.Run("LongPoll", func(t *testing.T) {
		url, _ := fifoQueue(t, ctx, c, "longpoll", nil)
		start := time.Now()
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), WaitTimeSeconds: 1})
		took := time.Since(start)
		if err != nil || len(out.Messages) != 0 {
			t.Fatalf("ReceiveMessage = %v, %v", out, err)
		}
		if took < 900*time.Millisecond || took > 5*time.Second {
			t.Errorf("long poll of 1 s took %v", took)
		}
	})

	t.Run("Reset", func(t *testing.T) {
		m.Reset(t)
		out, err := c.ListQueues(ctx, &sqs.ListQueuesInput{})
		if err != nil || len(out.QueueUrls) != 0 {
			t.Fatalf("ListQueues after Reset = %v, %v", out, err)
		}
	})
}
