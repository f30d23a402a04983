package connector

import (
	"errors"
	"fmt"
	"sync"
)

// Each stage of a poll publishes what it did as an Event; no counter is
// shared between the stages' goroutines. One collector sums the events
// into the poll's Result, and hands each to Connector.Events (a live
// view: progress on a terminal, status while a poll runs).

// EventKind names what happened to a message.
type EventKind string

const (
	EventListed          EventKind = "listed"           // the server listed Count messages
	EventDuplicateUID    EventKind = "duplicate-uidl"   // the server gives UIDL to several messages
	EventFetched         EventKind = "fetched"          // archived and recorded, Size bytes
	EventDelivered       EventKind = "delivered"        // every recipient accepted
	EventSuppressed      EventKind = "suppressed"       // Count recipients had it from another copy
	EventDeferred        EventKind = "deferred"         // a temporary failure; retried
	EventRejected        EventKind = "rejected"         // a permanent rejection; left on the server
	EventNotDue          EventKind = "not-due"          // waiting for its next attempt
	EventGaveUp          EventKind = "gave-up"          // past the give-up age
	EventBadmail         EventKind = "badmail"          // copied under badmail/
	EventDeletedRejected EventKind = "deleted-rejected" // to be deleted on a listed reply code
	EventNotice          EventKind = "notice"           // a postmaster notice accepted
	EventUnrecorded      EventKind = "unrecorded"       // accepted, but the reply could not be recorded
	EventDeleted         EventKind = "deleted"          // Count deletions confirmed by QUIT
	EventStopped         EventKind = "stopped"          // the poll stopped starting work: Reason
)

// Event is one thing a poll did.
type Event struct {
	Mailbox string
	UIDL    string // the ledger key of the message, "" for the mailbox
	Kind    EventKind
	Size    int64  // with EventFetched
	Count   int    // with EventListed, EventSuppressed, EventDeleted
	Reason  string // with EventStopped
}

// tally collects a poll's events. emit may be called from any goroutine
// until close; close returns the sums.
type tally struct {
	ch      chan Event
	done    chan struct{}
	observe func(Event)
	res     Result // written by the collector only
	mu      sync.Mutex
	closed  bool // guarded by mu: an event after close (a goroutine a panic left behind) is dropped
}

func newTally(observe func(Event)) *tally {
	t := &tally{ch: make(chan Event, 64), done: make(chan struct{}), observe: observe}
	go t.collect()
	return t
}

func (t *tally) collect() {
	defer close(t.done)
	for ev := range t.ch {
		t.add(ev)
		if t.observe != nil {
			func() {
				// A live view must not take the poll down with it.
				defer func() { _ = recover() }()
				t.observe(ev)
			}()
		}
	}
}

// add sums one event into the result.
func (t *tally) add(ev Event) {
	r := &t.res
	switch ev.Kind {
	case EventListed:
		r.OnServer += ev.Count
	case EventDuplicateUID:
		r.DuplicateUIDs++
	case EventFetched:
		r.Fetched++
		r.Bytes += ev.Size
	case EventDelivered:
		r.Delivered++
	case EventSuppressed:
		r.Suppressed += ev.Count
	case EventDeferred:
		r.Deferred++
	case EventRejected:
		r.Rejected++
	case EventNotDue:
		r.NotDue++
	case EventGaveUp:
		r.GaveUp++
	case EventBadmail:
		r.Badmail++
	case EventDeletedRejected:
		r.DeletedRejected++
	case EventNotice:
		r.Notices++
	case EventUnrecorded:
		r.UnrecordedReplies++
	case EventDeleted:
		r.Deleted += ev.Count
	case EventStopped:
		if r.Stopped == "" {
			r.Stopped = ev.Reason
		}
	}
}

func (t *tally) emit(ev Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.ch <- ev // the collector always drains: this never waits for long
	}
}

// close waits for every event and returns the sums.
func (t *tally) close() Result {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.ch)
	}
	t.mu.Unlock()
	<-t.done
	return t.res
}

// emit publishes an event of this poll.
func (p *poll) emit(kind EventKind, uidl string) {
	p.tally.emit(Event{Mailbox: p.mb.ID, UIDL: uidl, Kind: kind})
}

// stop publishes why the poll stops starting work (the first reason is
// the poll's Stopped).
func (p *poll) stop(why string) {
	if why != "" {
		p.tally.emit(Event{Mailbox: p.mb.ID, Kind: EventStopped, Reason: why})
	}
}

// recovered turns a panic in the goroutine it is deferred in into *err:
// the one place the connector recovers from its own bugs, at the top of
// every goroutine it starts.
// ErrInternal marks the error of a poll that a panic ended (a bug, never
// the mailbox's fault); the pipeline recovers it at its goroutine tops.
var ErrInternal = errors.New("connector: internal error")

func recovered(err *error, what string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%w %s: %v", ErrInternal, what, v)
	}
}
