package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// closeWatch reports, in kernel order, the names of files in one directory
// that were closed after being opened for writing (inotify IN_CLOSE_WRITE).
// It is read synchronously and non-blockingly by Drain, so an event that
// the kernel queued before a server's reply is always seen by a Drain that
// runs after the client got that reply.
type closeWatch struct {
	mu sync.Mutex
	fd int // -1 once closed
}

func newCloseWatch(dir string) (*closeWatch, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CLOSE_WRITE); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	return &closeWatch{fd: fd}, nil
}

// Drain returns the names closed since the previous Drain.
func (w *closeWatch) Drain() ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil, errors.New("testenv: close watch already closed")
	}
	var names []string
	buf := make([]byte, 64*1024)
	for {
		n, err := syscall.Read(w.fd, buf)
		if errors.Is(err, syscall.EAGAIN) || (err == nil && n == 0) {
			return names, nil
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return names, fmt.Errorf("read inotify: %w", err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				return names, errors.New("testenv: inotify queue overflow; completion order lost")
			}
			nameBytes := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
			if name := string(bytes.TrimRight(nameBytes, "\x00")); name != "" && ev.Mask&syscall.IN_CLOSE_WRITE != 0 {
				names = append(names, name)
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// Close releases the inotify descriptor; idempotent.
func (w *closeWatch) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd >= 0 {
		syscall.Close(w.fd)
		w.fd = -1
	}
}
