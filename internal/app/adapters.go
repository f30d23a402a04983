package app

import (
	"context"
	"errors"
	"io"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/oauth"
	"github.com/popconnector/popconnector/internal/pop3"
	"github.com/popconnector/popconnector/internal/relay"
)

// popSource adapts a pop3.Client to connector.Source.
type popSource struct{ c *pop3.Client }

func (s popSource) ListAll(ctx context.Context) ([]connector.ServerMessage, error) {
	list, err := s.c.ListAll(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]connector.ServerMessage, len(list))
	for i, m := range list {
		out[i] = connector.ServerMessage{Num: m.Num, Size: m.Size, UID: m.UID}
	}
	return out, nil
}

func (s popSource) Retr(ctx context.Context, num int) (io.ReadCloser, error) {
	return s.c.Retr(ctx, num)
}
func (s popSource) RetrPipelined(ctx context.Context, nums []int, depth int) connector.RetrQueue {
	return s.c.RetrPipelined(ctx, nums, depth)
}
func (s popSource) Dele(ctx context.Context, nums ...int) error { return s.c.Dele(ctx, nums...) }
func (s popSource) Quit(ctx context.Context) error              { return s.c.Quit(ctx) }
func (s popSource) DeleQuit(ctx context.Context, nums ...int) (deleErr, quitErr error) {
	return s.c.DeleQuit(ctx, nums...)
}
func (s popSource) Close() error { return s.c.Close() }

// DialPOP3 returns a SourceDialer that connects and logs in with a
// password (AUTH PLAIN if offered, else USER/PASS).
func DialPOP3(opts pop3.Options, user string, password func(context.Context) (string, error)) connector.SourceDialer {
	return DialPOP3Mechanism(opts, pop3.MechAuto, user, password)
}

// DialPOP3Mechanism returns a SourceDialer that resolves the password,
// connects and logs in with mech (USER, PLAIN, APOP or auto).
func DialPOP3Mechanism(opts pop3.Options, mech pop3.Mechanism, user string, password func(context.Context) (string, error)) connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		pass, err := password(ctx)
		if err != nil {
			return nil, err
		}
		c, err := pop3.Dial(ctx, opts)
		if err != nil {
			return nil, err
		}
		if err := c.Login(ctx, mech, user, pass); err != nil {
			c.Close()
			return nil, err
		}
		return popSource{c}, nil
	}
}

// DialPOP3OAuth returns a SourceDialer that connects and signs in with
// mech (XOAUTH2 or OAUTHBEARER) and an access token from tokens. A token
// the server rejects is renewed once, on the same connection.
func DialPOP3OAuth(opts pop3.Options, mech pop3.Mechanism, user string, tokens *oauth.Source) connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		c, err := pop3.Dial(ctx, opts)
		if err != nil {
			return nil, err
		}
		err = tokens.Authenticate(ctx, func(ctx context.Context, token string) error {
			return c.Login(ctx, mech, user, token)
		}, tokenRejected)
		if err != nil {
			c.Close()
			return nil, err
		}
		return popSource{c}, nil
	}
}

// tokenRejected reports a sign-in error that a renewed access token may
// overcome.
func tokenRejected(err error) bool {
	var e *pop3.Error
	return errors.As(err, &e) && e.TokenRejected()
}

// DialSMTP returns a RelayDialer for the delivery endpoint.
func DialSMTP(opts relay.Options, password func(context.Context) (string, error)) connector.RelayDialer {
	return func(ctx context.Context) (connector.Relay, error) {
		o := opts
		if o.Auth != nil && password != nil {
			pass, err := password(ctx)
			if err != nil {
				return nil, err
			}
			a := *o.Auth
			a.Password = pass
			o.Auth = &a
		}
		c, err := relay.Dial(ctx, o)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}
