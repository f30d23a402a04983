package connector

import (
	"context"
	"io"

	"github.com/popconnector/popconnector/internal/relay"
)

// ServerMessage is one message as the POP3 server lists it.
type ServerMessage struct {
	Num  int    // message number in this session
	Size int64  // LIST size
	UID  string // UIDL unique-id
}

// DeleQuitter is a Source that can send its DELEs and QUIT in one write
// (package pop3, when the server offers PIPELINING): deleting costs one
// round trip less. deleErr is what Dele would return, quitErr what Quit
// would.
type DeleQuitter interface {
	DeleQuit(ctx context.Context, nums ...int) (deleErr, quitErr error)
}

// Source is one authenticated POP3 session (package pop3 provides it).
type Source interface {
	// ListAll returns every message with its number, size and UIDL.
	ListAll(ctx context.Context) ([]ServerMessage, error)
	// Retr streams one message; the reader fails if the message is cut short.
	Retr(ctx context.Context, num int) (io.ReadCloser, error)
	// Dele marks messages for deletion; they are removed only by Quit.
	Dele(ctx context.Context, nums ...int) error
	// Quit ends the session; an error means the deletions may not have happened.
	Quit(ctx context.Context) error
	// Close drops the connection without QUIT (every DELE is rolled back).
	Close() error
}

// Pipeliner is a Source that can send several RETRs ahead and read the
// messages in order (RFC 2449 PIPELINING); a session whose server does
// not offer it degrades to one at a time. While a queue is open the
// session takes no other command.
type Pipeliner interface {
	RetrPipelined(ctx context.Context, nums []int, depth int) RetrQueue
}

// RetrQueue streams the messages of a pipelined RETR in the order asked
// for. Each body must be read to its end or closed before the next Next;
// Close reads and discards what was asked for and not taken.
type RetrQueue interface {
	Next(ctx context.Context) (num int, body io.ReadCloser, err error)
	Close(ctx context.Context) error
}

// Relay is one SMTP connection to the delivery endpoint (package relay).
type Relay interface {
	Send(ctx context.Context, env relay.Envelope, body io.Reader) ([]relay.Outcome, error)
	Quit() error
	Close() error
}

// SourceDialer opens and authenticates a POP3 session for a mailbox.
type SourceDialer func(ctx context.Context) (Source, error)

// RelayDialer opens an SMTP connection to the delivery endpoint.
type RelayDialer func(ctx context.Context) (Relay, error)
