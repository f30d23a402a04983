package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wireConn is the net.Conn go-smtp talks through. It exists because go-smtp
// sets a deadline per command but none on the writes of the message body, and
// knows nothing of contexts:
//
//   - every Read and Write arms a fresh deadline of timeout, capped by the
//     deadline of the context bound to the current operation;
//   - when that context is done, the blocked call is interrupted and the
//     connection refuses all further I/O;
//   - SetDeadline and friends from go-smtp are ignored, since wireConn owns
//     the deadlines;
//   - it writes the transcript and can capture server bytes (the EHLO reply,
//     whose full extension list go-smtp does not export).
type wireConn struct {
	net.Conn // the TCP or TLS connection underneath
	timeout  time.Duration
	tr       *transcript

	// greeting is returned by Read before any network data. After STARTTLS a
	// fresh go-smtp client must read a 220 greeting before it says EHLO; the
	// server sends none (RFC 3207 §4.2), so one is synthesised. Not logged.
	greeting []byte

	// capture, when non-nil, receives a copy of what the server sends.
	capture *bytes.Buffer
	// written counts bytes sent, to tell a failed greeting from a failed EHLO.
	written int64

	mu       sync.Mutex
	ctx      context.Context // bound to the current operation; nil if none
	deadline time.Time       // of the bound context; zero if none
	aborted  error           // set once the bound context is done; sticky

	closeOnce sync.Once
	closeErr  error
}

const maxCapture = 64 << 10

func newWireConn(c net.Conn, timeout time.Duration, tr *transcript) *wireConn {
	return &wireConn{Conn: c, timeout: timeout, tr: tr}
}

// bind makes ctx govern all I/O until the returned function is called.
func (w *wireConn) bind(ctx context.Context) (unbind func()) {
	if ctx == nil {
		ctx = context.Background()
	}
	w.mu.Lock()
	w.ctx = ctx
	w.deadline, _ = ctx.Deadline()
	w.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.aborted == nil {
			w.aborted = fmt.Errorf("relay: connection abandoned: %w", context.Cause(ctx))
		}
		// A deadline in the past interrupts a Read or Write in progress.
		_ = w.Conn.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		stop()
		w.mu.Lock()
		w.ctx, w.deadline = nil, time.Time{}
		w.mu.Unlock()
	}
}

// arm sets a fresh deadline for one Read (write=false) or Write.
func (w *wireConn) arm(write bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.aborted != nil {
		return w.aborted
	}
	d := time.Now().Add(w.timeout)
	if !w.deadline.IsZero() && w.deadline.Before(d) {
		d = w.deadline
	}
	if write {
		return w.Conn.SetWriteDeadline(d)
	}
	return w.Conn.SetReadDeadline(d)
}

// explain attaches the context's cause to an error caused by its end: an
// abort, or a timeout at the context's deadline (the connection's timer can
// fire just before the context's own).
func (w *wireConn) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.aborted != nil {
		return fmt.Errorf("%w (%w)", w.aborted, err)
	}
	if w.ctx != nil {
		if cause := context.Cause(w.ctx); cause != nil {
			return fmt.Errorf("relay: connection abandoned: %w (%w)", cause, err)
		}
		if !w.deadline.IsZero() && !time.Now().Before(w.deadline) && errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("relay: connection abandoned: %w (%w)", context.DeadlineExceeded, err)
		}
	}
	return err
}

func (w *wireConn) Read(p []byte) (int, error) {
	if len(w.greeting) > 0 {
		n := copy(p, w.greeting)
		w.greeting = w.greeting[n:]
		return n, nil
	}
	if err := w.arm(false); err != nil {
		return 0, err
	}
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.tr.server(p[:n])
		if w.capture != nil && w.capture.Len() < maxCapture {
			w.capture.Write(p[:n])
		}
	}
	if err != nil {
		return n, w.explain(err)
	}
	return n, nil
}

func (w *wireConn) Write(p []byte) (int, error) {
	if err := w.arm(true); err != nil {
		return 0, err
	}
	n, err := w.Conn.Write(p)
	w.written += int64(n)
	if n > 0 {
		w.tr.client(p[:n])
	}
	if err != nil {
		return n, w.explain(err)
	}
	return n, nil
}

// SetDeadline is a no-op: wireConn arms its own deadline for every call.
func (w *wireConn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline is a no-op, see SetDeadline.
func (w *wireConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline is a no-op, see SetDeadline.
func (w *wireConn) SetWriteDeadline(time.Time) error { return nil }

// Close closes the connection once; later calls return the first result.
func (w *wireConn) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.Conn.Close() })
	return w.closeErr
}

// transcript logs the SMTP dialogue at debug level, a line per record. The
// AUTH exchange is redacted, the message body is summarised, and server text
// is scrubbed of secrets. All methods do nothing when debug is disabled.
type transcript struct {
	log     *slog.Logger
	on      bool
	secrets secrets

	redact    bool  // inside AUTH: client lines are not shown
	inData    bool  // inside DATA: client bytes are counted, not shown
	chunkLeft int64 // bytes of a BDAT chunk still to come: counted, not shown
	dataBytes int64 // bytes of the body sent, dot-stuffing and terminator included

	cbuf, sbuf []byte // partial lines
}

const maxLogLine = 1024

func newTranscript(log *slog.Logger, s secrets) *transcript {
	return &transcript{log: log, on: log.Enabled(context.Background(), slog.LevelDebug), secrets: s}
}

func (t *transcript) client(p []byte) {
	if !t.on {
		return
	}
	for len(p) > 0 {
		switch {
		case t.inData:
			t.dataBytes += int64(len(p))
			return
		case t.chunkLeft > 0:
			n := min(t.chunkLeft, int64(len(p)))
			t.chunkLeft -= n
			t.dataBytes += n
			p = p[n:]
			if t.chunkLeft == 0 {
				t.summarise()
			}
		default:
			// One line at a time: a BDAT line says how many bytes of data
			// follow it (see emit).
			i := bytes.IndexByte(p, '\n') + 1
			if i == 0 {
				i = len(p)
			}
			t.cbuf = t.lines(t.cbuf, p[:i], "C")
			p = p[i:]
		}
	}
}

func (t *transcript) server(p []byte) {
	if !t.on {
		return
	}
	// The server speaks after the final "." (or interrupts): the body is
	// over, summarise it first so that the log keeps the order of the wire.
	t.endData()
	t.sbuf = t.lines(t.sbuf, p, "S")
}

// lines appends p to buf and logs every complete line.
func (t *transcript) lines(buf, p []byte, dir string) []byte {
	buf = append(buf, p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) > maxLogLine {
				t.emit(dir, string(buf))
				return buf[:0]
			}
			return buf
		}
		t.emit(dir, string(bytes.TrimRight(buf[:i], "\r")))
		buf = buf[:copy(buf, buf[i+1:])]
	}
}

func (t *transcript) emit(dir, line string) {
	if dir == "C" && t.redact {
		// Keep "AUTH PLAIN" / "AUTH LOGIN" for diagnosis, drop the rest.
		if f := strings.Fields(line); len(f) >= 2 && strings.EqualFold(f[0], "AUTH") {
			line = f[0] + " " + f[1] + " [redacted]"
		} else {
			line = "[redacted]"
		}
	} else {
		line = t.secrets.scrub(line)
	}
	if n, ok := bdatSize(dir, line); ok && n > 0 {
		t.chunkLeft, t.dataBytes = n, 0
	}
	if len(line) > maxLogLine {
		line = line[:maxLogLine] + "..."
	}
	t.log.LogAttrs(context.Background(), slog.LevelDebug, "smtp", slog.String("dir", dir), slog.String("line", line))
}

func (t *transcript) note(msg string, attrs ...slog.Attr) {
	if t.on {
		t.log.LogAttrs(context.Background(), slog.LevelDebug, msg, attrs...)
	}
}

func (t *transcript) beginData() {
	t.inData = true
	t.dataBytes = 0
}

func (t *transcript) endData() {
	if !t.inData {
		return
	}
	t.inData = false
	t.summarise()
}

// summarise logs the count of body bytes in place of the bytes.
func (t *transcript) summarise() {
	t.note("smtp", slog.String("dir", "C"), slog.String("line", fmt.Sprintf("[message data, %d bytes]", t.dataBytes)))
}

// bdatSize reads the chunk size of a client's "BDAT n [LAST]" line
// (RFC 3030 §2).
func bdatSize(dir, line string) (int64, bool) {
	f := strings.Fields(line)
	if dir != "C" || len(f) < 2 || !strings.EqualFold(f[0], "BDAT") {
		return 0, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	return n, err == nil
}
