package reliability

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/popconnector/popconnector/internal/testenv"
)

// RawSMTP is a line-level SMTP fault server on 127.0.0.1 for the faults
// neither smtp-sink nor ScriptedSMTP can stage: a 421 greeting, a
// connection dropped in the middle of DATA, a reply that echoes the AUTH
// credentials. Each connection runs Handle.
type RawSMTP struct {
	Addr string

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	// Log records every line the clients sent (data lines included).
	log []string
}

// SMTPConn is one accepted connection.
type SMTPConn struct {
	C net.Conn
	R *bufio.Reader
	s *RawSMTP
}

// Reply writes one reply line with CRLF.
func (c *SMTPConn) Reply(line string) error {
	_, err := io.WriteString(c.C, line+"\r\n")
	return err
}

// Line reads one command line without CRLF, and logs it.
func (c *SMTPConn) Line() (string, error) {
	c.C.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := c.R.ReadString('\n')
	l = strings.TrimRight(l, "\r\n")
	if l != "" {
		c.s.mu.Lock()
		c.s.log = append(c.s.log, l)
		c.s.mu.Unlock()
	}
	return l, err
}

// StartRawSMTP starts the server; t.Cleanup closes it.
func StartRawSMTP(t T, handle func(c *SMTPConn)) *RawSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("raw SMTP listen: %v", err)
	}
	s := &RawSMTP{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[conn] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					recover() // a handler's panic ends only its connection
					conn.Close()
					s.mu.Lock()
					delete(s.conns, conn)
					s.mu.Unlock()
				}()
				handle(&SMTPConn{C: conn, R: bufio.NewReader(conn), s: s})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Lines returns every line clients sent, in order.
func (s *RawSMTP) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// Converse answers a normal SMTP dialogue up to and including the DATA
// command (EHLO, MAIL, RCPT, RSET, NOOP with 250, DATA with 354) and
// returns when DATA was accepted (true) or the client quit or went away.
// onCmd may answer a command itself by returning true.
func (c *SMTPConn) Converse(onCmd func(cmd string) bool) bool {
	for {
		l, err := c.Line()
		if err != nil {
			return false
		}
		if onCmd != nil && onCmd(l) {
			continue
		}
		verb := strings.ToUpper(strings.SplitN(l, " ", 2)[0])
		switch verb {
		case "EHLO":
			c.Reply("250-raw.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
		case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			c.Reply("250 2.0.0 ok")
		case "DATA":
			c.Reply("354 go ahead")
			return true
		case "QUIT":
			c.Reply("221 2.0.0 bye")
			return false
		default:
			c.Reply("502 5.5.2 not implemented")
		}
	}
}

// ExactSMTP is an SMTP server on 127.0.0.1 that keeps every accepted
// message exactly as it arrived: the DATA end is CRLF "." CRLF and nothing
// else (RFC 5321 §4.1.1.4), a leading "." is removed from a line that
// starts after CRLF (§4.5.2), and every other byte, a bare CR included,
// is data. go-smtp's reader, which ScriptedSMTP uses, takes CR CR LF for
// no line end, so a body whose last byte is a bare CR never ends there.
// It offers 8BITMIME and ENHANCEDSTATUSCODES, not SMTPUTF8 (as an
// Exchange receive connector without it).
type ExactSMTP struct {
	*RawSMTP
	mu   sync.Mutex
	msgs []testenv.Received
}

// StartExactSMTP starts the server; t.Cleanup closes it.
func StartExactSMTP(t T) *ExactSMTP {
	t.Helper()
	s := &ExactSMTP{}
	s.RawSMTP = StartRawSMTP(t, s.serve)
	return s
}

func (s *ExactSMTP) serve(c *SMTPConn) {
	if c.Reply("220 exact.test ESMTP") != nil {
		return
	}
	var tx testenv.Received
	onCmd := func(cmd string) bool {
		verb, arg, _ := strings.Cut(cmd, ":")
		switch strings.ToUpper(strings.TrimSpace(verb)) {
		case "MAIL FROM":
			tx = testenv.Received{From: envelopeAddr(arg)}
		case "RCPT TO":
			tx.To = append(tx.To, envelopeAddr(arg))
		case "RSET":
			tx = testenv.Received{}
		}
		return false
	}
	for c.Converse(onCmd) {
		c.C.SetReadDeadline(time.Now().Add(time.Minute))
		var data bytes.Buffer
		if _, err := unstuff(c.R, &data); err != nil {
			return
		}
		tx.Data = data.Bytes()
		s.mu.Lock()
		s.msgs = append(s.msgs, tx)
		s.mu.Unlock()
		tx = testenv.Received{}
		if c.Reply("250 2.0.0 kept") != nil {
			return
		}
	}
}

// envelopeAddr is the address of a MAIL FROM or RCPT TO argument, without
// its brackets and parameters.
func envelopeAddr(arg string) string {
	arg = strings.TrimSpace(arg)
	if i := strings.IndexByte(arg, '>'); strings.HasPrefix(arg, "<") && i > 0 {
		return arg[1:i]
	}
	addr, _, _ := strings.Cut(arg, " ")
	return addr
}

// Messages returns the accepted transactions, in order.
func (s *ExactSMTP) Messages() []testenv.Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]testenv.Received(nil), s.msgs...)
}
