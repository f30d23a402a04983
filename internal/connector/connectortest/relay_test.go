package connectortest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
	"github.com/popconnector/popconnector/internal/relay"
	"github.com/popconnector/popconnector/internal/route"
)

func dialRelay(t *testing.T, r *connectortest.Relay) connector.Relay {
	t.Helper()
	c, err := r.Dialer()(bg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// outcome is what a test expects for one recipient.
type outcome struct {
	ok        bool // accepted; the rest is the error's
	code      int
	enhanced  string
	temporary bool
	op        string
	local     bool
}

func (o outcome) check(t *testing.T, got relay.Outcome) {
	t.Helper()
	if o.ok {
		if got.Err != nil || !strings.HasPrefix(got.Reply, "2.0.0 Ok: queued as ") {
			t.Errorf("%s: %v (reply %q), want accepted", got.Address, got.Err, got.Reply)
		}
		return
	}
	e := got.Err
	if e == nil || e.Code != o.code || e.Enhanced != o.enhanced || e.Temporary != o.temporary || e.Op != o.op || e.Local != o.local {
		t.Errorf("%s: %+v, want %+v", got.Address, e, o)
	}
}

// refused is a server's reply code for step op.
func refused(code int, enhanced, op string) outcome {
	return outcome{code: code, enhanced: enhanced, temporary: code/100 != 5, op: op}
}

var (
	accepted    = outcome{ok: true}
	sizeRefused = outcome{code: 552, enhanced: "5.3.4", op: "mail", local: true}
	lostConn    = outcome{temporary: true, op: "data"}
	abandoned   = outcome{temporary: true, op: "data", local: true}
	errBody     = errors.New("archive read failed")
	errPrevRec  = errors.New("previous outcome not recorded")
)

// Each case scripts the relay, sends one message to a and b, and checks
// the outcomes, the Send error, what the relay kept and whether the
// connection is still usable.
func TestRelayScript(t *testing.T) {
	tests := []struct {
		name      string
		script    func(r *connectortest.Relay)
		body      io.Reader // nil: "body"
		beforeEnd error
		size      int64
		want      [2]outcome
		wantErr   bool
		kept      []string // recipients of the kept message; nil = none kept
		replyLost bool
		broken    bool
	}{
		{name: "accept all", want: [2]outcome{accepted, accepted}, kept: []string{"a@x.example", "b@x.example"}},
		{name: "one recipient deferred", script: func(r *connectortest.Relay) {
			r.SetRcpt("b@x.example", connectortest.Reply(452, "4.2.2", "mailbox full"))
		}, want: [2]outcome{accepted, refused(452, "4.2.2", "rcpt")}, kept: []string{"a@x.example"}},
		{name: "all rejected: no DATA", script: func(r *connectortest.Relay) {
			r.SetRcpt("a@x.example", connectortest.Reply(550, "5.1.10", "recipient not found"))
			r.SetRcpt("b@x.example", connectortest.Reply(550, "5.1.10", "recipient not found"))
		}, beforeEnd: errPrevRec, // never called: there is no DATA
			want: [2]outcome{refused(550, "5.1.10", "rcpt"), refused(550, "5.1.10", "rcpt")}},
		{name: "421 at RCPT drops the connection", script: func(r *connectortest.Relay) {
			r.SetRcpt("a@x.example", connectortest.Reply(421, "4.3.2", "shutting down"))
		}, want: [2]outcome{refused(421, "4.3.2", "rcpt"), refused(421, "4.3.2", "rcpt")}, wantErr: true, broken: true},
		{name: "sender refused", script: func(r *connectortest.Relay) {
			r.SetMail(connectortest.Reply(550, "5.7.1", "sender not allowed"))
		}, want: [2]outcome{refused(550, "5.7.1", "mail"), refused(550, "5.7.1", "mail")}},
		{name: "refused after the final dot", script: func(r *connectortest.Relay) {
			r.SetData(connectortest.Reply(554, "5.6.0", "content rejected"))
		}, want: [2]outcome{refused(554, "5.6.0", "data"), refused(554, "5.6.0", "data")}},
		{name: "deferred after the final dot", script: func(r *connectortest.Relay) {
			r.SetData(connectortest.Reply(451, "4.3.0", "try later"))
		}, want: [2]outcome{refused(451, "4.3.0", "data"), refused(451, "4.3.0", "data")}},
		{name: "lost reply: taken, but the client sees a dropped connection", script: func(r *connectortest.Relay) {
			r.LoseReplies(1)
		}, want: [2]outcome{lostConn, lostConn}, wantErr: true, kept: []string{"a@x.example", "b@x.example"}, replyLost: true, broken: true},
		{name: "over the SIZE limit: refused locally", script: func(r *connectortest.Relay) {
			r.SetMaxSize(100)
		}, size: 101, want: [2]outcome{sizeRefused, sizeRefused}},
		{name: "at the SIZE limit", script: func(r *connectortest.Relay) {
			r.SetMaxSize(100)
		}, size: 100, want: [2]outcome{accepted, accepted}, kept: []string{"a@x.example", "b@x.example"}},
		{name: "BeforeEnd fails: abandoned before the dot", beforeEnd: errPrevRec,
			want: [2]outcome{abandoned, abandoned}, wantErr: true, broken: true},
		{name: "body unreadable", body: io.MultiReader(strings.NewReader("part"), failing{errBody}),
			want: [2]outcome{abandoned, abandoned}, wantErr: true, broken: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := connectortest.NewRelay()
			if tt.script != nil {
				tt.script(r)
			}
			c := dialRelay(t, r)
			defer c.Close()
			body := tt.body
			if body == nil {
				body = strings.NewReader("body")
			}
			called := false
			env := relay.Envelope{From: "s@y.example", To: []string{"a@x.example", "b@x.example"}, Size: tt.size,
				BeforeEnd: func() error { called = true; return tt.beforeEnd }}
			outs, err := c.Send(bg, env, body)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Send error = %v, want error %v", err, tt.wantErr)
			}
			if len(outs) != 2 || outs[0].Address != "a@x.example" || outs[1].Address != "b@x.example" {
				t.Fatalf("outcomes %+v", outs)
			}
			for i, o := range tt.want {
				o.check(t, outs[i])
			}
			msgs := r.Messages()
			switch {
			case tt.kept == nil && len(msgs) != 0:
				t.Fatalf("kept %+v, want nothing", msgs)
			case tt.kept != nil && (len(msgs) != 1 || strings.Join(msgs[0].To, " ") != strings.Join(tt.kept, " ") ||
				string(msgs[0].Data) != "body" || msgs[0].ReplyLost != tt.replyLost):
				t.Fatalf("kept %+v, want one message to %v (reply lost %v)", msgs, tt.kept, tt.replyLost)
			case tt.kept != nil && !called:
				t.Fatal("BeforeEnd was not called before the message was taken")
			}
			// The next transaction shows whether the connection survived.
			r2 := relay.Envelope{From: "s@y.example", To: []string{"c@x.example"}}
			_, err = c.Send(bg, r2, strings.NewReader("next"))
			if tt.broken != (err != nil) {
				t.Fatalf("next Send on the connection = %v, want broken %v", err, tt.broken)
			}
		})
	}
}

// The body is read to its end before BeforeEnd runs, and the message is
// taken only after it returns.
func TestRelayBeforeEndOrder(t *testing.T) {
	r := connectortest.NewRelay()
	c := dialRelay(t, r)
	defer c.Close()
	body := &eofSpy{r: strings.NewReader("the whole body")}
	var atEnd struct {
		eof  bool
		kept int
	}
	env := relay.Envelope{From: "s@y.example", To: []string{"a@x.example"}, BeforeEnd: func() error {
		atEnd.eof, atEnd.kept = body.eof, len(r.Messages())
		return nil
	}}
	if _, err := c.Send(bg, env, body); err != nil {
		t.Fatal(err)
	}
	if !atEnd.eof || atEnd.kept != 0 {
		t.Fatalf("at BeforeEnd: body read to the end %v, messages kept %d; want true, 0", atEnd.eof, atEnd.kept)
	}
	if got := r.Messages(); len(got) != 1 || string(got[0].Data) != "the whole body" || got[0].Env.BeforeEnd != nil {
		t.Fatalf("kept %+v", got)
	}
}

// A connection takes one Send at a time, as relay.Client does.
func TestRelayOneSendAtATime(t *testing.T) {
	r := connectortest.NewRelay()
	c := dialRelay(t, r)
	defer c.Close()
	var inner error
	env := relay.Envelope{From: "s@y.example", To: []string{"a@x.example"}, BeforeEnd: func() error {
		_, inner = c.Send(bg, relay.Envelope{To: []string{"b@x.example"}}, strings.NewReader("x"))
		return nil
	}}
	if _, err := c.Send(bg, env, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if inner == nil {
		t.Fatal("a Send inside another Send on the same connection succeeded")
	}
}

func TestRelayDialers(t *testing.T) {
	a, b := connectortest.NewRelay(), connectortest.NewRelay()
	dialRoute := connectortest.Routes(map[string]*connectortest.Relay{"Primary": a, "backup": b})
	send := func(t *testing.T, c connector.Relay) {
		t.Helper()
		if _, err := c.Send(bg, relay.Envelope{To: []string{"x@y.example"}}, strings.NewReader("m")); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"primary", "BACKUP"} {
		c, err := dialRoute(bg, route.Route{Name: name, Host: "mx.example"})
		if err != nil {
			t.Fatalf("route %s: %v", name, err)
		}
		send(t, c)
	}
	if _, err := dialRoute(bg, route.Route{Name: "other"}); err == nil {
		t.Fatal("a route with no relay was reached")
	}
	c, err := b.RouteDialer()(bg, route.Route{Name: "any"})
	if err != nil {
		t.Fatal(err)
	}
	send(t, c)
	if got := a.Messages(); len(got) != 1 || got[0].Route != "primary" {
		t.Fatalf("relay a kept %+v", got)
	}
	if got := b.Messages(); len(got) != 2 || got[0].Route != "BACKUP" || got[1].Route != "any" {
		t.Fatalf("relay b kept %+v", got)
	}
	if st := b.Stats(); st != (connectortest.RelayStats{Dials: 2, Open: 0, MaxOpen: 1, Transactions: 2, Quits: 2}) {
		t.Fatalf("relay b stats %+v", st)
	}

	b.FailDials(1, nil)
	if _, err := b.Dialer()(bg); relay.AsError(err) == nil || !relay.AsError(err).Temporary {
		t.Fatalf("scripted dial failure = %v, want a temporary *relay.Error", err)
	}
	if _, err := b.Dialer()(bg); err != nil {
		t.Fatalf("dial after one scripted failure: %v", err)
	}
	if st := b.Stats(); st.Open != 1 {
		t.Fatalf("Open = %d, want the one connection left open", st.Open)
	}
}

// A cancelled context drops the connection, as a cut transaction does.
func TestRelayCancelled(t *testing.T) {
	r := connectortest.NewRelay()
	c := dialRelay(t, r)
	defer c.Close()
	ctx, cancel := context.WithCancel(bg)
	cancel()
	outs, err := c.Send(ctx, relay.Envelope{To: []string{"a@x.example"}}, strings.NewReader("m"))
	if !errors.Is(err, context.Canceled) || outs[0].Err == nil || !outs[0].Err.Temporary {
		t.Fatalf("Send = %+v, %v; want a temporary failure wrapping context.Canceled", outs, err)
	}
	if len(r.Messages()) != 0 {
		t.Fatal("a cancelled Send was kept")
	}
}

type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }

type eofSpy struct {
	r   io.Reader
	eof bool
}

func (s *eofSpy) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.eof = true
	}
	return n, err
}
