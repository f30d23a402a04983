package connector

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// The process-wide limits every poll of a Connector shares, however many
// mailboxes run at once:
//
//   - the reply window (Settings.ReplyWindow): how many messages may be
//     between their final "." (or BDAT LAST) and the durable record of the
//     reply. A crash repeats at most this many messages; it is the one
//     declared source of a second copy.
//   - the connections of each route (route.Route.MaxConnections), which
//     Exchange counts per source (MaxInboundConnectionPerSource).

// gates holds the shared limits; built on first use from the Settings and
// routes of the Connector.
type gates struct {
	window chan struct{}

	mu     sync.Mutex
	routes map[string]*routeGate // by lower-cased route name
}

// gatesMu guards the first use of every Connector's shared limits: a
// lock of the package, so that a Connector stays a plain value to copy.
var gatesMu sync.Mutex

func (c *Connector) gates() *gates {
	gatesMu.Lock()
	defer gatesMu.Unlock()
	if c.shared == nil {
		c.shared = &gates{window: make(chan struct{}, max(c.Settings.ReplyWindow, 1)), routes: map[string]*routeGate{}}
	}
	return c.shared
}

// ForPoller is a copy of c for one poller of the same process (a Lambda
// invocation): its own logger and lease owner, the same process-wide
// limits (reply window, route connections) as c and every other copy.
func (c *Connector) ForPoller(log *slog.Logger, leaseOwner string) *Connector {
	c.gates()
	cp := *c
	cp.Logger = log
	cp.Settings.LeaseOwner = leaseOwner
	return &cp
}

// replySlot is one message's place in the reply window. acquire takes it
// before the message's first final "."; release gives it back once the
// reply is recorded (or the message was never committed). Both are
// idempotent, so a message sent over several routes holds one place;
// release is for the one owner of the place at a time (deliver, then
// settle or recordLater), never for a later route group's hold.
type replySlot struct {
	window chan struct{}
	held   atomic.Bool
}

func (g *gates) replySlot() *replySlot { return &replySlot{window: g.window} }

// acquire waits for a place in the window, or for ctx to end.
func (s *replySlot) acquire(ctx context.Context) error {
	if s.held.Load() {
		return nil
	}
	select {
	case s.window <- struct{}{}:
		s.held.Store(true)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a place in the reply window: %w", context.Cause(ctx))
	}
}

func (s *replySlot) release() {
	if s != nil && s.held.CompareAndSwap(true, false) {
		<-s.window
	}
}

// holding reports that the place is taken: a final "." of the message
// went out, or is about to.
func (s *replySlot) holding() bool { return s.held.Load() }

// routeGate counts the open connections of one route across the process.
// A poll that must wait for one first closes its own idle connections
// (routing.acquire), and a connection given back while someone waits is
// closed rather than kept idle (routing.release), so a waiting poll is
// served at the next give-back of any poll, and at the latest when the
// polls holding idle connections end their deliveries (closeIdleAsync).
// A message that already holds a place in the reply window never waits
// here (routing.send): a wait for a connection held by a message waiting
// for that place could not end.
type routeGate struct {
	slots   chan struct{} // nil: no limit
	waiters atomic.Int32
}

func (g *gates) route(name string, limit int) *routeGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := strings.ToLower(name)
	rg := g.routes[key]
	if rg == nil {
		rg = &routeGate{}
		if limit > 0 {
			rg.slots = make(chan struct{}, limit)
		}
		g.routes[key] = rg
	}
	return rg
}

// tryTake takes a connection's place without waiting.
func (rg *routeGate) tryTake() bool {
	if rg.slots == nil {
		return true
	}
	select {
	case rg.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// waiting counts the caller as waiting for a place until stop is called:
// a connection given back meanwhile is closed rather than kept idle.
func (rg *routeGate) waiting() (stop func()) {
	rg.waiters.Add(1)
	return func() { rg.waiters.Add(-1) }
}

// take waits for a connection's place, or for ctx to end; the caller
// counts itself as waiting (waiting) first.
func (rg *routeGate) take(ctx context.Context) error {
	if rg.slots == nil {
		return nil
	}
	select {
	case rg.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a connection of the route: %w", context.Cause(ctx))
	}
}

// give returns the place of a connection that was closed.
func (rg *routeGate) give() {
	if rg.slots != nil {
		<-rg.slots
	}
}

// contended reports that a poll waits for a connection of the route.
func (rg *routeGate) contended() bool { return rg.waiters.Load() > 0 }
