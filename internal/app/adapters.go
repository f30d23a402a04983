package app

import (
	"context"
	"io"

	"github.com/popconnector/popconnector/internal/connector"
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
func (s popSource) Dele(ctx context.Context, nums ...int) error { return s.c.Dele(ctx, nums...) }
func (s popSource) Quit(ctx context.Context) error              { return s.c.Quit(ctx) }
func (s popSource) Close() error                                { return s.c.Close() }

// DialPOP3 returns a SourceDialer that connects and logs in.
func DialPOP3(opts pop3.Options, user string, password func(context.Context) (string, error)) connector.SourceDialer {
	return func(ctx context.Context) (connector.Source, error) {
		pass, err := password(ctx)
		if err != nil {
			return nil, err
		}
		c, err := pop3.Dial(ctx, opts)
		if err != nil {
			return nil, err
		}
		if err := c.Auth(ctx, user, pass); err != nil {
			c.Close()
			return nil, err
		}
		return popSource{c}, nil
	}
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
