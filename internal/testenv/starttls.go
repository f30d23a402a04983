package testenv

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// starttlsFront adds STARTTLS (RFC 3207) in front of an SMTP server that has
// none (smtp-sink). It relays bytes unchanged in both directions; it only
//   - inserts "250-STARTTLS" after the first EHLO reply line
//     ("250-<hostname>") while the session is still in plaintext,
//   - answers STARTTLS itself and then speaks TLS to the client, relaying
//     the decrypted bytes to the backend as before.
//
// The backend sees every command except STARTTLS; a client EHLO after TLS
// goes to the backend, whose reply carries no STARTTLS, as RFC 3207
// section 4.2 requires.
type starttlsFront struct {
	ln       net.Listener
	backend  string
	cfg      *tls.Config
	ehloLine []byte // "250-<hostname>\r\n"

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func newStartTLSFront(backend string, cert tls.Certificate, hostname string) (*starttlsFront, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &starttlsFront{
		ln:       ln,
		backend:  backend,
		cfg:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ehloLine: []byte("250-" + hostname + "\r\n"),
		conns:    map[net.Conn]bool{},
	}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

func (f *starttlsFront) Addr() string { return f.ln.Addr().String() }

// Close stops accepting, closes every relayed connection and waits for the
// relay goroutines. Idempotent.
func (f *starttlsFront) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *starttlsFront) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

func (f *starttlsFront) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *starttlsFront) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { _ = recover() }() // a relay bug must not kill the test binary
			defer f.untrack(c)
			f.relay(c)
		}()
	}
}

// session is one relayed connection.
type session struct {
	f       *starttlsFront
	backend net.Conn

	mu     sync.Mutex
	client net.Conn // swapped to the *tls.Conn after STARTTLS
	tls    bool
}

func (s *session) writeClient(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.client.Write(b)
	return err
}

func (f *starttlsFront) relay(client net.Conn) {
	backend, err := net.DialTimeout("tcp", f.backend, 5*time.Second)
	if err != nil {
		client.Write([]byte("421 4.3.0 testenv front: backend unreachable\r\n"))
		return
	}
	if !f.track(backend) {
		return
	}
	defer f.untrack(backend)
	s := &session{f: f, backend: backend, client: client}

	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }()
		s.backendToClient()
		// The backend hung up: so do we.
		s.mu.Lock()
		s.client.Close()
		s.mu.Unlock()
	}()
	s.clientToBackend(client)
	backend.Close()
	<-done
}

// backendToClient copies reply lines, adding STARTTLS to the EHLO reply
// while the session is plaintext.
func (s *session) backendToClient() {
	r := bufio.NewReader(s.backend)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			if werr := s.writeClient(line); werr != nil {
				return
			}
			s.mu.Lock()
			plain := !s.tls
			s.mu.Unlock()
			if plain && bytes.Equal(line, s.f.ehloLine) {
				if s.writeClient([]byte("250-STARTTLS\r\n")) != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// clientToBackend forwards command lines, intercepting STARTTLS, until the
// session leaves the greeting phase; then it is a plain byte copy.
func (s *session) clientToBackend(client net.Conn) {
	r := bufio.NewReader(client)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if len(line) > 0 {
				s.backend.Write(line)
			}
			return
		}
		verb := strings.ToUpper(strings.TrimRight(string(line), "\r\n"))
		if i := strings.IndexByte(verb, ' '); i >= 0 {
			verb = verb[:i]
		}
		switch verb {
		case "STARTTLS":
			if r.Buffered() > 0 {
				// RFC 3207 section 4: a client must not pipeline after
				// STARTTLS; plaintext injected here would run after TLS.
				s.writeClient([]byte("501 5.5.4 testenv front: data after STARTTLS\r\n"))
				return
			}
			if s.writeClient([]byte("220 2.0.0 Ready to start TLS\r\n")) != nil {
				return
			}
			tc := tls.Server(client, s.f.cfg)
			_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				return
			}
			_ = tc.SetDeadline(time.Time{})
			s.mu.Lock()
			s.client, s.tls = tc, true
			s.mu.Unlock()
			_, _ = io.Copy(s.backend, tc)
			return
		case "EHLO", "HELO", "NOOP", "RSET":
			if _, err := s.backend.Write(line); err != nil {
				return
			}
		default:
			// MAIL, AUTH, DATA...: no STARTTLS can follow in this session's
			// plaintext phase that we would honour; relay raw from here on
			// so message data is never parsed as commands.
			if _, err := s.backend.Write(line); err != nil {
				return
			}
			_, _ = io.Copy(s.backend, r)
			return
		}
	}
}
