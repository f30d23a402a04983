package pop3

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// errAborted is returned by deadlineConn after its command's context ended.
var errAborted = errors.New("connection aborted")

// deadlineConn sets a fresh deadline before every Read and Write on the TCP
// connection: now+timeout, or the deadline of the running command's context
// if that is sooner. A server that sends nothing for timeout fails the read;
// a slow transfer that keeps delivering bytes never does. It sits below TLS,
// so handshake and record reads are covered as well.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
	ctxDL   atomic.Int64 // UnixNano of the command context's deadline; 0 = none
	aborted atomic.Bool
}

func (d *deadlineConn) deadline() time.Time {
	t := time.Now().Add(d.timeout)
	if ns := d.ctxDL.Load(); ns != 0 {
		if c := time.Unix(0, ns); c.Before(t) {
			return c
		}
	}
	return t
}

func (d *deadlineConn) setContextDeadline(t time.Time) {
	if t.IsZero() {
		d.ctxDL.Store(0)
		return
	}
	d.ctxDL.Store(t.UnixNano())
}

// abort makes every pending and future I/O fail. It is called from a
// context.AfterFunc goroutine. The flag is set before the past deadline, and
// Read/Write check it after setting their own deadline, so a deadline
// refresh can never overwrite the abort.
func (d *deadlineConn) abort() {
	d.aborted.Store(true)
	d.Conn.SetDeadline(time.Unix(1, 0))
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	if d.aborted.Load() {
		return 0, errAborted
	}
	if err := d.Conn.SetReadDeadline(d.deadline()); err != nil {
		return 0, err
	}
	if d.aborted.Load() {
		return 0, errAborted
	}
	return d.Conn.Read(p)
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	if d.aborted.Load() {
		return 0, errAborted
	}
	if err := d.Conn.SetWriteDeadline(d.deadline()); err != nil {
		return 0, err
	}
	if d.aborted.Load() {
		return 0, errAborted
	}
	return d.Conn.Write(p)
}
