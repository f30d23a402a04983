package lambdafn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/ledger"
)

// Trigger names what started an invocation.
type Trigger string

const (
	// TriggerSchedule: an EventBridge "Scheduled Event" (or the empty
	// object {} an EventBridge Scheduler target sends by default): every
	// enabled mailbox is polled.
	TriggerSchedule Trigger = "schedule"
	// TriggerManual: {"mailboxes":["sales", ...]}: only those are polled.
	TriggerManual Trigger = "manual"
	// TriggerQueue: an SQS batch event from the job queue's event source
	// mapping (fan-out mode): each record's Job names the mailboxes.
	TriggerQueue Trigger = "queue"
)

// Event is the invocation payload. It decodes exactly two shapes and
// rejects anything else with an error naming what was expected:
//
//   - an EventBridge Scheduled Event (events.CloudWatchEvent with
//     detail-type "Scheduled Event"), or {}: poll every enabled mailbox;
//   - {"mailboxes":["sales","support"]}: poll only those (retrieve now);
//   - an SQS batch event ({"Records":[...]} from aws:sqs) whose message
//     bodies are Jobs: poll the mailboxes they name (fan-out workers).
type Event struct {
	Trigger Trigger
	// Mailboxes lists the ids a manual event asks for, in order, without
	// repeats; empty for a scheduled event.
	Mailboxes []string
	// Schedule is the EventBridge event, when there was one.
	Schedule *events.CloudWatchEvent
	// Jobs are the records of an SQS batch event, in order.
	Jobs []QueuedJob
}

// ErrBadEvent reports a payload that is neither shape Event accepts.
var ErrBadEvent = errors.New("lambdafn: unsupported event")

// EventError is the error of an invocation whose event cannot be served
// (ErrBadEvent, ErrUnknownMailbox). Lambda reports its type name,
// "EventError", as the invocation's errorType; retrying it cannot help.
type EventError struct{ Err error }

func (e *EventError) Error() string { return e.Err.Error() }
func (e *EventError) Unwrap() error { return e.Err }

// StartError is the error of an invocation that could not start polling:
// the configuration or its source is unusable. errorType "StartError".
type StartError struct{ Err error }

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

func badEvent(format string, args ...any) error {
	return &EventError{fmt.Errorf("%w: "+format, append([]any{ErrBadEvent}, args...)...)}
}

const wantShapes = `want an EventBridge Scheduled Event, {"mailboxes":["id",...]} to poll chosen mailboxes now, or an SQS event of jobs`

// UnmarshalJSON implements json.Unmarshaler.
func (e *Event) UnmarshalJSON(data []byte) error {
	*e = Event{}
	if t := bytes.TrimSpace(data); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return badEvent("empty payload; %s", wantShapes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return badEvent("not a JSON object; %s", wantShapes)
	}
	if raw, ok := fields["mailboxes"]; ok {
		if len(fields) != 1 {
			return badEvent("a manual event holds only \"mailboxes\", found also %s", otherKeys(fields, "mailboxes"))
		}
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil {
			return badEvent("\"mailboxes\" must be a list of mailbox ids (strings)")
		}
		if len(ids) == 0 {
			return badEvent("\"mailboxes\" is empty; name at least one mailbox id")
		}
		e.Trigger = TriggerManual
		for _, id := range ids {
			if !slices.Contains(e.Mailboxes, id) {
				e.Mailboxes = append(e.Mailboxes, id)
			}
		}
		return nil
	}
	if _, ok := fields["Records"]; ok {
		if len(fields) != 1 {
			return badEvent("an SQS event holds only \"Records\", found also %s", otherKeys(fields, "Records"))
		}
		jobs, err := decodeQueueEvent(data)
		if err != nil {
			return err
		}
		e.Trigger, e.Jobs = TriggerQueue, jobs
		return nil
	}
	if len(fields) == 0 {
		e.Trigger = TriggerSchedule
		return nil
	}
	if _, ok := fields["detail-type"]; ok {
		var cw events.CloudWatchEvent
		if err := json.Unmarshal(data, &cw); err != nil {
			return badEvent("malformed EventBridge event: %v", err)
		}
		if cw.DetailType != "Scheduled Event" {
			return badEvent("EventBridge detail-type %q; %s", cw.DetailType, wantShapes)
		}
		e.Trigger = TriggerSchedule
		e.Schedule = &cw
		return nil
	}
	return badEvent("keys %s; %s", otherKeys(fields, ""), wantShapes)
}

func otherKeys(fields map[string]json.RawMessage, except string) string {
	var keys []string
	for k := range fields {
		if k != except {
			keys = append(keys, fmt.Sprintf("%q", k))
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// Summary is what an invocation returns: one entry per mailbox polled.
type Summary struct {
	RequestID string           `json:"request_id,omitempty"`
	Trigger   Trigger          `json:"trigger"`
	Mailboxes []MailboxSummary `json:"mailboxes"`
	// Failed counts mailboxes whose poll ended with an error.
	Failed int `json:"failed"`
	// Stopped counts mailboxes whose poll stopped early (deadline, limits),
	// leaving mail for the next invocation.
	Stopped int `json:"stopped"`
	// Busy counts mailboxes another invocation was polling (lease held);
	// they were skipped, which is not a failure.
	Busy int `json:"busy"`
	// Dispatched counts the jobs a dispatcher queued (fan-out mode).
	Dispatched int `json:"dispatched,omitempty"`
	// BatchItemFailures names the jobs of an SQS event to be received
	// again: only those whose mailbox poll met an infrastructure fault.
	BatchItemFailures []events.SQSBatchItemFailure `json:"batchItemFailures,omitempty"`
}

// MarshalJSON gives an SQS event's invocation the response the event
// source mapping reads (events.SQSEventResponse: batchItemFailures, an
// empty list when every job is done) and any other the whole Summary.
func (s *Summary) MarshalJSON() ([]byte, error) {
	if s.Trigger == TriggerQueue {
		failures := s.BatchItemFailures
		if failures == nil {
			failures = []events.SQSBatchItemFailure{}
		}
		return json.Marshal(events.SQSEventResponse{BatchItemFailures: failures})
	}
	type plain Summary // without this method
	return json.Marshal((*plain)(s))
}

// MailboxSummary is connector.Result in JSON-friendly form.
type MailboxSummary struct {
	Mailbox   string `json:"mailbox"`
	OnServer  int    `json:"on_server"`
	Fetched   int    `json:"fetched"`
	Bytes     int64  `json:"bytes"`
	Delivered int    `json:"delivered"`
	Deferred  int    `json:"deferred"`
	Rejected  int    `json:"rejected"`
	GaveUp    int    `json:"gave_up"`
	Deleted   int    `json:"deleted"`
	NotDue    int    `json:"not_due"`
	// Badmail counts messages set aside under the archive's badmail/
	// prefix; DeletedRejected rejected messages deleted under the
	// undeliverable option "delete"; Notices postmaster notices sent.
	Badmail         int `json:"badmail"`
	DeletedRejected int `json:"deleted_rejected"`
	Notices         int `json:"notices"`
	// UnrecordedReplies counts messages the SMTP server accepted whose
	// acceptance could not be recorded (the poll was cut in between): the
	// next poll relays them again, the one source of duplicates.
	UnrecordedReplies int `json:"unrecorded_replies"`
	// OldestUndeliveredSeconds is the age of the oldest message not yet
	// delivered, 0 when there is none.
	OldestUndeliveredSeconds int64 `json:"oldest_undelivered_seconds"`
	// Stopped says why the poll stopped starting new messages early
	// ("deadline", "max messages per poll", ...), empty if it did not.
	Stopped    string `json:"stopped,omitempty"`
	Busy       bool   `json:"busy,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

func summarize(r connector.Result) MailboxSummary {
	s := MailboxSummary{
		Mailbox: r.Mailbox, OnServer: r.OnServer, Fetched: r.Fetched, Bytes: r.Bytes,
		Delivered: r.Delivered, Deferred: r.Deferred, Rejected: r.Rejected, GaveUp: r.GaveUp,
		Deleted: r.Deleted, NotDue: r.NotDue,
		Badmail: r.Badmail, DeletedRejected: r.DeletedRejected, Notices: r.Notices,
		UnrecordedReplies:        r.UnrecordedReplies,
		OldestUndeliveredSeconds: int64(r.OldestUndelivered / time.Second),
		Stopped:                  r.Stopped,
		DurationMS:               r.Duration.Milliseconds(),
	}
	switch {
	case r.Err == nil:
	case errors.Is(r.Err, ledger.ErrLeaseHeld):
		s.Busy = true
	default:
		s.Error = r.Err.Error()
	}
	return s
}
