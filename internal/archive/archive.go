// Package archive keeps the durable copy of every fetched message.
//
// Guarantees every implementation gives:
//   - Put returns only after the bytes are durable (a local file is fsynced
//     and renamed into place and its directory fsynced; an S3 object is
//     acknowledged). A crash before that leaves no object under the key, or
//     the previous complete object: never a partial one.
//   - The stored bytes equal the bytes read from r, and Info.SHA256 is their
//     digest, computed while streaming: memory does not grow with size.
//   - Putting the same key again replaces the object atomically, so a
//     re-archive after a crash is harmless.
//
// What it cannot do: it does not check that r held a whole message; the
// caller passes a reader that fails on truncation (the POP3 RETR reader does).
package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrNotFound reports a key with no stored object.
var ErrNotFound = errors.New("archive: no such message")

// Info describes one stored message.
type Info struct {
	Key    string
	Size   int64
	SHA256 string // hex
}

// Meta is descriptive data stored beside the bytes where the backend can
// (S3 object metadata); it never holds a secret.
type Meta struct {
	Mailbox   string
	UIDL      string
	MessageID string
}

// Archive stores raw messages.
type Archive interface {
	// Put streams r into key and returns once it is durable.
	Put(ctx context.Context, key string, meta Meta, r io.Reader) (Info, error)
	// Open streams the stored bytes of key back.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// Stager is an Archive that can take in a message's bytes before making
// them durable, so that the next message can be received while this one is
// flushed (on a local disk the flush, not the copy, is what takes time).
// Put is Stage followed by Commit.
type Stager interface {
	// Stage streams r into a temporary object for key. Nothing is visible
	// under key until Commit; Discard (or a crash) leaves the key as it was.
	Stage(ctx context.Context, key string, meta Meta, r io.Reader) (Staged, error)
}

// Staged is a message received by Stage but not yet durable. Its methods
// may be called from another goroutine than Stage's, one at a time.
type Staged interface {
	// Info is the key, size and digest of the staged bytes.
	Info() Info
	// Commit makes the bytes durable under the key, with every guarantee
	// of Put; afterwards Discard does nothing.
	Commit(ctx context.Context) error
	// Discard drops the staged bytes if they were not committed.
	Discard()
}

// KeyFor names the object of one message: <mailbox>/<yyyy>/<mm>/<dd>/<id>.eml,
// dated by when the message was first seen (UTC), with id derived from the
// mailbox and UIDL so the same message always gets the same key. UIDLs may
// hold any printable character, so they are hashed rather than used raw.
func KeyFor(mailbox, uidl string, firstSeen time.Time) string {
	sum := sha256.Sum256([]byte(mailbox + "\x00" + uidl))
	t := firstSeen.UTC()
	return fmt.Sprintf("%s/%04d/%02d/%02d/%s.eml", mailbox, t.Year(), int(t.Month()), t.Day(), hex.EncodeToString(sum[:12]))
}

// ContextReader reads r until ctx is done, then fails with ctx's error:
// a cancelled Put (or Open) stops mid-stream instead of running to the
// end of a large message.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return &ctxReader{ctx: ctx, r: r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
