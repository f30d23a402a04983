// Package pop3test runs scripted POP3 servers in-process on 127.0.0.1, for
// tests that need server behaviour a real server cannot be made to show:
// truncated or malformed responses, stalls, -ERR with chosen response codes,
// QUIT answered with -ERR, injected data after STLS.
//
// Two levels are offered. NewServer hands each connection to a function
// that scripts the exchange line by line through a Session. Mailbox is a
// small RFC 1939 server (USER/PASS, AUTH PLAIN, CAPA, STAT, LIST, UIDL,
// RETR, DELE, NOOP, RSET, QUIT with the UPDATE state) whose Fault hook can
// replace the answer to any command.
//
// Delay puts a proxy with a fixed latency in front of any server, to
// measure what round trips cost.
//
// What it cannot do: TLS, APOP, TOP. It is a test double, not a server;
// it listens only on loopback and trusts its scripts.
package pop3test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server accepts connections on 127.0.0.1 and runs a handler for each.
type Server struct {
	// Addr is the host:port to dial.
	Addr string

	t      testing.TB
	ln     net.Listener
	handle func(*Session)
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewServer starts a server whose connections are handled by handle, each
// in its own goroutine; the connection is closed when handle returns. The
// server is closed by t.Cleanup.
func NewServer(t testing.TB, handle func(*Session)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pop3test: listen: %v", err)
	}
	s := &Server{Addr: ln.Addr().String(), t: t, ln: ln, handle: handle, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(conn)
	}
}

func (s *Server) serve(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.t.Errorf("pop3test: handler panicked: %v", r)
		}
	}()
	s.handle(&Session{T: s.t, Conn: conn, R: bufio.NewReader(conn)})
}

// Close stops the listener, closes open connections and waits for the
// handlers to return. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Session is one accepted connection.
type Session struct {
	T    testing.TB
	Conn net.Conn
	R    *bufio.Reader
}

// Send writes each line followed by CRLF, in a single write.
func (s *Session) Send(lines ...string) error {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	_, err := io.WriteString(s.Conn, b.String())
	return err
}

// SendRaw writes b unchanged.
func (s *Session) SendRaw(b []byte) error {
	_, err := s.Conn.Write(b)
	return err
}

// ReadCommand reads one command line and returns it without CRLF.
func (s *Session) ReadCommand() (string, error) {
	line, err := s.R.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Expect reads one command and reports a test error unless it equals want.
func (s *Session) Expect(want string) bool {
	s.T.Helper()
	got, err := s.ReadCommand()
	if err != nil {
		s.T.Errorf("pop3test: expecting %q: %v", want, err)
		return false
	}
	if got != want {
		s.T.Errorf("pop3test: got command %q, want %q", got, want)
		return false
	}
	return true
}

// DotStuff encodes msg as the body of a multi-line response (RFC 1939 §3):
// a "." is added before every line that starts with ".", CRLF is appended
// if msg does not end with one, then the terminator ".\r\n". Only CRLF
// ends a line; bare CR and LF are data.
func DotStuff(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+len(msg)/64+5)
	bol := true
	for i := 0; i < len(msg); i++ {
		if bol && msg[i] == '.' {
			out = append(out, '.')
		}
		out = append(out, msg[i])
		bol = msg[i] == '\n' && i > 0 && msg[i-1] == '\r'
	}
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return append(out, ".\r\n"...)
}

// DefaultCapa is the CAPA response of a Mailbox whose Capa is nil.
var DefaultCapa = []string{"USER", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"}

// Mailbox is a minimal POP3 server over a fixed list of messages. Messages
// deleted in a session are removed only when that session's QUIT succeeds
// (RFC 1939 §6), so Remaining shows what a real server would keep.
type Mailbox struct {
	User, Pass string
	// Messages are the raw messages; RETR sends them dot-stuffed.
	Messages [][]byte
	// Capa lists the CAPA response lines; nil means DefaultCapa. Include
	// "SASL PLAIN" to accept AUTH PLAIN.
	Capa []string
	// Greeting is the +OK greeting line; "" means a default with an APOP
	// timestamp.
	Greeting string
	// Fault, if set, sees every command line first. Returning true means it
	// handled the command (wrote a response, or closed the connection);
	// false lets the Mailbox answer normally.
	Fault func(s *Session, cmd string) bool

	mu      sync.Mutex
	live    []int // indexes into Messages not yet deleted by a committed QUIT
	started bool
	stuffed map[int][]byte
}

// UID is the unique-id the Mailbox reports for Messages[i].
func UID(i int) string { return "uid-" + strconv.Itoa(i) }

// Remaining returns the messages not removed by a successful QUIT.
func (m *Mailbox) Remaining() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	out := make([][]byte, 0, len(m.live))
	for _, i := range m.live {
		out = append(out, m.Messages[i])
	}
	return out
}

func (m *Mailbox) init() {
	if !m.started {
		m.started = true
		for i := range m.Messages {
			m.live = append(m.live, i)
		}
		m.stuffed = map[int][]byte{}
	}
}

// wire returns the dot-stuffed encoding of Messages[i], computed once so
// that serving a large message does not allocate per RETR.
func (m *Mailbox) wire(i int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.stuffed[i]
	if !ok {
		b = DotStuff(m.Messages[i])
		m.stuffed[i] = b
	}
	return b
}

// Prepare computes the wire encoding of every message ahead of time (for
// benchmarks that must not count the server's allocations).
func (m *Mailbox) Prepare() {
	m.mu.Lock()
	m.init()
	m.mu.Unlock()
	for i := range m.Messages {
		m.wire(i)
	}
}

// SetCapa sets Capa while sessions may run: the next session answers
// CAPA with lines.
func (m *Mailbox) SetCapa(lines []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Capa = lines
}

// Serve runs one session; pass it to NewServer.
func (m *Mailbox) Serve(s *Session) {
	m.mu.Lock()
	m.init()
	snapshot := append([]int(nil), m.live...) // message numbers are fixed per session
	greeting, capa := m.Greeting, m.Capa
	m.mu.Unlock()

	if greeting == "" {
		greeting = "+OK pop3test ready <1896.697170952@pop3test>"
	}
	if s.Send(greeting) != nil {
		return
	}
	if capa == nil {
		capa = DefaultCapa
	}
	var (
		user    string
		authed  bool
		deleted = map[int]bool{}
	)
	// msg maps a message-number argument to an index into Messages.
	msg := func(arg string) (int, bool) {
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 || n > len(snapshot) || deleted[n] {
			return 0, false
		}
		return snapshot[n-1], true
	}
	for {
		line, err := s.ReadCommand()
		if err != nil {
			return
		}
		if m.Fault != nil && m.Fault(s, line) {
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		var resp []string
		switch {
		case verb == "CAPA":
			resp = append(append([]string{"+OK capability list follows"}, capa...), ".")
		case verb == "QUIT":
			if authed && len(deleted) > 0 {
				gone := map[int]bool{}
				for n := range deleted {
					gone[snapshot[n-1]] = true
				}
				m.mu.Lock()
				var keep []int
				for _, i := range m.live {
					if !gone[i] {
						keep = append(keep, i)
					}
				}
				m.live = keep
				m.mu.Unlock()
			}
			s.Send("+OK bye")
			return
		case !authed && verb == "USER":
			user = arg
			resp = []string{"+OK"}
		case !authed && verb == "PASS":
			if user == m.User && arg == m.Pass {
				authed = true
				resp = []string{"+OK logged in"}
			} else {
				resp = []string{"-ERR [AUTH] invalid credentials"}
			}
		case !authed && verb == "AUTH":
			var ok bool
			ok, resp = m.authPlain(s, arg)
			authed = ok
		case !authed:
			resp = []string{"-ERR not authenticated"}
		case verb == "STAT":
			var size int
			count := 0
			for n, i := range snapshot {
				if !deleted[n+1] {
					count++
					size += len(m.Messages[i])
				}
			}
			resp = []string{fmt.Sprintf("+OK %d %d", count, size)}
		case verb == "LIST" || verb == "UIDL":
			value := func(i int) string {
				if verb == "LIST" {
					return strconv.Itoa(len(m.Messages[i]))
				}
				return UID(i)
			}
			if arg != "" {
				if i, ok := msg(arg); ok {
					resp = []string{fmt.Sprintf("+OK %s %s", arg, value(i))}
				} else {
					resp = []string{"-ERR no such message"}
				}
				break
			}
			resp = []string{"+OK"}
			for n, i := range snapshot {
				if !deleted[n+1] {
					resp = append(resp, fmt.Sprintf("%d %s", n+1, value(i)))
				}
			}
			resp = append(resp, ".")
		case verb == "RETR":
			i, ok := msg(arg)
			if !ok {
				resp = []string{"-ERR no such message"}
				break
			}
			if s.Send("+OK message follows") != nil || s.SendRaw(m.wire(i)) != nil {
				return
			}
			continue
		case verb == "DELE":
			if _, ok := msg(arg); !ok {
				resp = []string{"-ERR no such message"}
				break
			}
			n, _ := strconv.Atoi(arg)
			deleted[n] = true
			resp = []string{"+OK marked"}
		case verb == "RSET":
			clear(deleted)
			resp = []string{"+OK"}
		case verb == "NOOP":
			resp = []string{"+OK"}
		default:
			resp = []string{"-ERR unknown command"}
		}
		if s.Send(resp...) != nil {
			return
		}
	}
}

// authPlain handles "AUTH PLAIN [initial-response]" (RFC 5034, RFC 4616).
func (m *Mailbox) authPlain(s *Session, arg string) (bool, []string) {
	mech, ir, _ := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		return false, []string{"-ERR unsupported mechanism"}
	}
	if ir == "" {
		if s.Send("+ ") != nil {
			return false, nil
		}
		line, err := s.ReadCommand()
		if err != nil {
			return false, nil
		}
		if line == "*" {
			return false, []string{"-ERR authentication cancelled"}
		}
		ir = line
	}
	raw, err := base64.StdEncoding.DecodeString(ir)
	if err != nil {
		return false, []string{"-ERR bad base64"}
	}
	parts := bytes.Split(raw, []byte{0})
	if len(parts) != 3 || string(parts[1]) != m.User || string(parts[2]) != m.Pass {
		return false, []string{"-ERR [AUTH] invalid credentials"}
	}
	return true, []string{"+OK logged in"}
}

// Delay starts a proxy on 127.0.0.1 in front of addr that hands on every
// byte, in both directions, oneWay after it arrived: a round trip of
// 2*oneWay, with no limit on bandwidth (up to 4 MiB in flight each way).
// It returns the address to dial. The proxy is closed by t.Cleanup.
func Delay(t testing.TB, addr string, oneWay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pop3test: listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", addr)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(server, client, oneWay) }()
			go func() { defer wg.Done(); delayCopy(client, server, oneWay) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

type delayed struct {
	b   []byte
	due time.Time
}

// delayCopy copies src to dst, each chunk delay after it was read. At EOF
// it half-closes dst; on any error it closes both.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	chunks := make(chan delayed, 128) // of up to 32 KiB each
	go func() {
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- delayed{append([]byte(nil), buf[:n]...), time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			dst.Close()
			src.Close()
			for range chunks {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}
