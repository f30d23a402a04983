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
)

// Event is the invocation payload. It decodes exactly two shapes and
// rejects anything else with an error naming what was expected:
//
//   - an EventBridge Scheduled Event (events.CloudWatchEvent with
//     detail-type "Scheduled Event"), or {}: poll every enabled mailbox;
//   - {"mailboxes":["sales","support"]}: poll only those (retrieve now).
type Event struct {
	Trigger Trigger
	// Mailboxes lists the ids a manual event asks for, in order, without
	// repeats; empty for a scheduled event.
	Mailboxes []string
	// Schedule is the EventBridge event, when there was one.
	Schedule *events.CloudWatchEvent
}

// ErrBadEvent reports a payload that is neither shape Event accepts.
var ErrBadEvent = errors.New("lambdafn: unsupported event")

const wantShapes = `want an EventBridge Scheduled Event, or {"mailboxes":["id",...]} to poll chosen mailboxes now`

// UnmarshalJSON implements json.Unmarshaler.
func (e *Event) UnmarshalJSON(data []byte) error {
	*e = Event{}
	if t := bytes.TrimSpace(data); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return fmt.Errorf("%w: empty payload; %s", ErrBadEvent, wantShapes)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return fmt.Errorf("%w: not a JSON object; %s", ErrBadEvent, wantShapes)
	}
	if raw, ok := fields["mailboxes"]; ok {
		if len(fields) != 1 {
			return fmt.Errorf("%w: a manual event holds only \"mailboxes\", found also %s", ErrBadEvent, otherKeys(fields, "mailboxes"))
		}
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil {
			return fmt.Errorf("%w: \"mailboxes\" must be a list of mailbox ids (strings)", ErrBadEvent)
		}
		if len(ids) == 0 {
			return fmt.Errorf("%w: \"mailboxes\" is empty; name at least one mailbox id", ErrBadEvent)
		}
		e.Trigger = TriggerManual
		for _, id := range ids {
			if !slices.Contains(e.Mailboxes, id) {
				e.Mailboxes = append(e.Mailboxes, id)
			}
		}
		return nil
	}
	if len(fields) == 0 {
		e.Trigger = TriggerSchedule
		return nil
	}
	if _, ok := fields["detail-type"]; ok {
		var cw events.CloudWatchEvent
		if err := json.Unmarshal(data, &cw); err != nil {
			return fmt.Errorf("%w: malformed EventBridge event: %v", ErrBadEvent, err)
		}
		if cw.DetailType != "Scheduled Event" {
			return fmt.Errorf("%w: EventBridge detail-type %q; %s", ErrBadEvent, cw.DetailType, wantShapes)
		}
		e.Trigger = TriggerSchedule
		e.Schedule = &cw
		return nil
	}
	return fmt.Errorf("%w: keys %s; %s", ErrBadEvent, otherKeys(fields, ""), wantShapes)
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
