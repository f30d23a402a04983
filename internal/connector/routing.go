package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/popconnector/popconnector/internal/ledger"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

// RouteDialer opens an SMTP connection to one route's endpoint.
type RouteDialer func(ctx context.Context, r route.Route) (Relay, error)

// routing is one poll's view of the routes: the open connections of each
// route (idle ones reused, one per delivery in flight), and the routes
// found unreachable in this poll (route.Down), which later messages of the
// poll do not try again. Any goroutine of the poll may use it.
type routing struct {
	table *route.Table
	dial  RouteDialer
	gates *gates // the process-wide connection limit of each route
	log   *slog.Logger

	mu      sync.Mutex
	idle    map[string][]*pooled    // open and not in use, by lower-cased route name
	open    []*pooled               // every open connection, for a stable close order
	warming map[string]int          // connections being opened ahead (warm), by lower-cased route name
	warmed  sync.Cond               // on mu: a connection opened ahead is ready, or failed
	ahead   sync.WaitGroup          // the goroutines of warm and closeIdleAsync
	down    route.Down              // routes that could not be reached
	downErr map[string]*relay.Error // why, by lower-cased route name
	// limit is the smallest SIZE limit (RFC 1870) a connection of this
	// poll advertised, 0 when none is known; the fetching side reads it.
	limit atomic.Int64
}

func (c *Connector) newRouting() (*routing, error) {
	rt := &routing{table: c.Routes, dial: c.DialRoute, gates: c.gates(), log: c.log(), idle: map[string][]*pooled{},
		warming: map[string]int{}, down: route.Down{}, downErr: map[string]*relay.Error{}}
	rt.warmed.L = &rt.mu
	if rt.table == nil || rt.dial == nil {
		return nil, errors.New("connector: no routes or no route dialer configured")
	}
	return rt, nil
}

// pooled is an open connection of the poll and the route limit it counts
// against. A pointer of its own, because a Relay need not be comparable.
type pooled struct {
	Relay
	gate *routeGate
}

// acquire returns a connection of r for the caller alone: an idle one, or
// a new one within the route's process-wide limit (a route that cannot be
// reached is marked down for the poll). The caller gives it back with
// release, or drops it.
func (rt *routing) acquire(ctx context.Context, r route.Route) (*pooled, error) {
	return rt.acquireFor(ctx, r, true)
}

// errNoConnectionFree: acquireFor was not to wait, and the route has no
// connection free within its limit.
var errNoConnectionFree = errors.New("no connection of the route free within its max_connections, and this message may not wait for one")

// acquireFor is acquire; with wait false it does not wait for a place in
// the route's limit but fails with errNoConnectionFree.
func (rt *routing) acquireFor(ctx context.Context, r route.Route, wait bool) (*pooled, error) {
	key := strings.ToLower(r.Name)
	if c, err := rt.takeIdle(key, true); c != nil || err != nil {
		return c, err
	}
	gate := rt.gates.route(r.Name, r.MaxConnections)
	if gate.tryTake() {
		return rt.dialNew(ctx, r, gate)
	}
	if !wait {
		return nil, &relay.Error{Op: "connect", Message: "route " + r.Name + ": " + errNoConnectionFree.Error(), Temporary: true, Local: true,
			Err: errNoConnectionFree}
	}
	// Counted as waiting first: from here on a connection any poll gives
	// back is closed, its place freed (release), so none can go idle
	// unseen. Then this poll's own idle ones: one of the route is taken,
	// the others closed, since another poll may wait for their places.
	rt.mu.Lock()
	stop := gate.waiting() // under mu: see release
	rt.mu.Unlock()
	defer stop()
	if c, err := rt.takeIdle(key, false); c != nil || err != nil {
		return c, err
	}
	rt.closeIdle()
	if err := gate.take(ctx); err != nil {
		return nil, &relay.Error{Op: "connect", Message: err.Error(), Temporary: true, Local: true, Err: err}
	}
	return rt.dialNew(ctx, r, gate)
}

// takeIdle returns an idle connection of the route key, or the reason
// the route is down; with forWarm, first waits for the connections being
// opened ahead (one of them is as near as a new one, and within the
// limit).
func (rt *routing) takeIdle(key string, forWarm bool) (*pooled, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for {
		if e := rt.downErr[key]; e != nil {
			return nil, e
		}
		if n := len(rt.idle[key]); n > 0 {
			c := rt.idle[key][n-1]
			rt.idle[key] = rt.idle[key][:n-1]
			return c, nil
		}
		if !forWarm || rt.warming[key] == 0 {
			return nil, nil
		}
		rt.warmed.Wait()
	}
}

// warm opens up to n connections of each route that to needs, ahead and
// at once, so that the first deliveries find them ready: their connect,
// greeting and EHLO overlap the first fetches instead of following them.
// Only places free in the route's limit are taken; nothing waits. A route
// that cannot be reached is marked down, as the first delivery would.
func (rt *routing) warm(ctx context.Context, to []string, n int) {
	if n <= 0 || len(to) == 0 {
		return
	}
	for _, g := range rt.table.PlanAvoiding(to, rt.downNow()) {
		if g.Unroutable() {
			continue
		}
		r := *g.Route
		key := strings.ToLower(r.Name)
		gate := rt.gates.route(r.Name, r.MaxConnections)
		for range n {
			if !gate.tryTake() {
				break
			}
			rt.mu.Lock()
			rt.warming[key]++
			rt.mu.Unlock()
			rt.ahead.Go(func() { rt.guarded("opening an SMTP connection ahead", func() { rt.openAhead(ctx, r, key, gate) }) })
		}
	}
}

// openAhead opens one connection of r for warm.
func (rt *routing) openAhead(ctx context.Context, r route.Route, key string, gate *routeGate) {
	defer func() {
		rt.mu.Lock()
		rt.warming[key]--
		rt.warmed.Broadcast()
		rt.mu.Unlock()
	}()
	c, derr := rt.dialNew(ctx, r, gate)
	if derr != nil {
		rt.log.Warn("route unreachable; failing over", "route", r.Name, "host", r.Addr(), "err", derr)
		return
	}
	rt.release(r, c)
}

// guarded runs f at the top of a goroutine of the routing: a panic is
// logged as an error (what names the work), not the end of the process.
func (rt *routing) guarded(what string, f func()) {
	var err error
	defer func() {
		if err != nil {
			rt.log.Error(what, "err", err)
		}
	}()
	defer recovered(&err, "while "+what)
	f()
}

// dialGuarded dials r, giving gate's place back if the dialer panics
// (the panic goes on to the goroutine's recovery).
func (rt *routing) dialGuarded(ctx context.Context, r route.Route, gate *routeGate) (Relay, error) {
	defer func() {
		if v := recover(); v != nil {
			gate.give()
			panic(v)
		}
	}()
	return rt.dial(ctx, r)
}

// dialNew opens a connection of r in the place taken in gate.
func (rt *routing) dialNew(ctx context.Context, r route.Route, gate *routeGate) (*pooled, error) {
	key := strings.ToLower(r.Name)
	conn, err := rt.dialGuarded(ctx, r, gate)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err != nil {
		gate.give()
		e := relay.AsError(err)
		rt.down[key] = true
		rt.downErr[key] = e
		return nil, e
	}
	c := &pooled{Relay: conn, gate: gate}
	rt.open = append(rt.open, c)
	if s, ok := conn.(interface{ MaxSize() int64 }); ok {
		if n := s.MaxSize(); n > 0 && (rt.limit.Load() == 0 || n < rt.limit.Load()) {
			rt.limit.Store(n)
		}
	}
	return c, nil
}

// release gives back a connection that is still usable: kept idle for
// the poll's next message, or ended when another poll waits for a
// connection of the route.
func (rt *routing) release(r route.Route, c *pooled) {
	// Checked and kept under mu, which a waiter of this poll holds while
	// it counts itself waiting: either it sees the connection idle, or
	// this sees it waiting.
	rt.mu.Lock()
	if !c.gate.contended() {
		key := strings.ToLower(r.Name)
		rt.idle[key] = append(rt.idle[key], c)
		rt.mu.Unlock()
		return
	}
	rt.mu.Unlock()
	// QUIT off this goroutine: the message that gives the connection back
	// may still hold its place in the reply window.
	rt.ahead.Go(func() { rt.guarded("closing an SMTP connection", func() { rt.end(c, true) }) })
}

// drop closes a connection that became unusable; a later message dials
// another.
func (rt *routing) drop(c *pooled) { rt.end(c, false) }

// end closes c (after QUIT when polite) and gives its place back.
func (rt *routing) end(c *pooled, polite bool) {
	if !polite || c.Quit() != nil {
		c.Close()
	}
	rt.mu.Lock()
	n := len(rt.open)
	rt.open = slices.DeleteFunc(rt.open, func(o *pooled) bool { return o == c })
	ended := len(rt.open) < n
	rt.mu.Unlock()
	if ended {
		c.gate.give() // once, however often it is ended
	}
}

// closeIdleAsync ends the poll's idle connections on a goroutine of their
// own; closeAll waits for it.
func (rt *routing) closeIdleAsync() {
	rt.ahead.Go(func() { rt.guarded("closing SMTP connections", rt.closeIdle) })
}

// closeIdle ends the poll's idle connections.
func (rt *routing) closeIdle() {
	rt.mu.Lock()
	var idle []*pooled
	for _, cs := range rt.idle {
		idle = append(idle, cs...)
	}
	rt.idle = map[string][]*pooled{}
	rt.mu.Unlock()
	rt.endAll(idle)
}

// downNow is a copy of the routes found down so far.
func (rt *routing) downNow() route.Down {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return maps.Clone(rt.down)
}

// closeAll ends every connection: QUIT, or a plain close when QUIT fails.
// Nothing may use the routing after it.
func (rt *routing) closeAll() {
	rt.ahead.Wait()
	rt.mu.Lock()
	open := slices.Clone(rt.open)
	rt.idle = map[string][]*pooled{}
	rt.mu.Unlock()
	rt.endAll(open)
}

// endAll ends conns with their QUITs at once, so that closing costs one
// round trip, not one per connection.
func (rt *routing) endAll(conns []*pooled) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { rt.guarded("closing an SMTP connection", func() { rt.end(c, true) }) })
	}
	wg.Wait()
}

// sizeLimit is the smallest SIZE limit (RFC 1870) a connection of this
// poll advertised, 0 when none is known. Any goroutine may call it.
func (rt *routing) sizeLimit() int64 { return rt.limit.Load() }

// remoteName is the host shown as Remote-MTA in notices.
func remoteName(r route.Route) string { return r.Host }

// unroutable explains why addr has no route left: the failure of the best
// route that serves it and was found down, or that no route serves it.
func (rt *routing) unroutable(addr string) *relay.Error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, r := range rt.table.Candidates(addr) {
		if e := rt.downErr[strings.ToLower(r.Name)]; e != nil {
			return e
		}
	}
	return &relay.Error{Op: "connect", Message: "no route: no configured route's address space serves the domain of " + addr,
		Temporary: true, Local: true}
}

// send relays rec to env.To: one SMTP transaction per route group
// (route.Plan); a route that cannot be reached is marked down and its
// recipients fail over to the next route by cost. It returns one outcome
// per env.To entry, in order, and the host that gave it ("" when none).
//
// committed reports that the message holds its place in the reply window
// (a group's final "." went out): a later group then takes only a
// connection free at once, and its recipients are deferred otherwise.
func (rt *routing) send(ctx context.Context, p *poll, rec *ledger.Record, env relay.Envelope, committed func() bool) ([]relay.Outcome, []string) {
	out := make([]relay.Outcome, len(env.To))
	remote := make([]string, len(env.To))
	pos := make(map[string][]int, len(env.To))
	for i, a := range env.To {
		pos[a] = append(pos[a], i)
		out[i].Address = a
	}
	set := func(addr string, o relay.Outcome, host string) {
		for _, i := range pos[addr] {
			out[i] = o
			out[i].Address = addr
			remote[i] = host
		}
	}
	lastErr := map[string]*relay.Error{}
	queue := rt.table.PlanAvoiding(env.To, rt.downNow())
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if g.Unroutable() {
			for _, a := range g.Recipients {
				e := lastErr[a]
				if e == nil {
					e = rt.unroutable(a)
				}
				set(a, relay.Outcome{Err: e}, "")
			}
			continue
		}
		r := *g.Route
		c, err := rt.acquireFor(ctx, r, !committed())
		if errors.Is(err, errNoConnectionFree) {
			for _, a := range g.Recipients {
				set(a, relay.Outcome{Err: relay.AsError(err)}, "")
			}
			continue
		}
		if err != nil {
			e := relay.AsError(err)
			for _, a := range g.Recipients {
				lastErr[a] = e
			}
			p.log.Warn("route unreachable; failing over", "route", r.Name, "host", r.Addr(), "err", e)
			queue = append(queue, rt.table.Failover(g, rt.downNow())...)
			continue
		}
		genv := env
		genv.To = g.Recipients
		outs, serr := p.sendVia(ctx, c, rec, genv)
		if serr != nil {
			rt.drop(c) // unusable; a later message dials another
		} else {
			rt.release(r, c)
		}
		for j, a := range g.Recipients {
			o := relay.Outcome{Address: a, Err: relay.AsError(orUnknown(serr))}
			if j < len(outs) {
				o = outs[j]
			}
			set(a, o, remoteName(r))
		}
	}
	return out, remote
}

// sendNotice relays a notice to the postmaster with the null reverse-path
// (RFC 3464 §2) over the route that serves the postmaster's address,
// failing over like a message.
func (rt *routing) sendNotice(ctx context.Context, to string, body []byte) error {
	queue := rt.table.PlanAvoiding([]string{to}, rt.downNow())
	var last error = rt.unroutable(to)
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		if g.Unroutable() {
			continue
		}
		c, err := rt.acquire(ctx, *g.Route)
		if err != nil {
			last = err
			queue = append(queue, rt.table.Failover(g, rt.downNow())...)
			continue
		}
		outs, err := c.Send(ctx, relay.Envelope{From: "", To: []string{to}, Size: int64(len(body))}, strings.NewReader(string(body)))
		if err != nil {
			rt.drop(c)
		} else {
			rt.release(*g.Route, c)
		}
		if len(outs) == 1 && outs[0].Err == nil && err == nil {
			return nil
		}
		if len(outs) == 1 && outs[0].Err != nil {
			return outs[0].Err
		}
		return fmt.Errorf("notice to %s: %w", to, orUnknown(err))
	}
	return last
}
