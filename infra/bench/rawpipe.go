package main

// The pipelined raw client: `bench raw --pipeline N`, the ceiling at a
// round-trip time. The one-at-a-time raw client pays one RTT per message,
// so at 20 ms it cannot pass 50 msg/s whatever the server does; a client
// that keeps N RETRs in flight (RFC 2449 PIPELINING) pays one RTT per N
// messages, and so shows what the link and the server allow. It speaks the
// protocol itself on purpose: internal/pop3 is the code under test, and the
// ceiling must not move when it changes.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// pipeConn is a POP3 session with buffered writes: commands go out when
// flush is called, so a window of them leaves in one segment.
type pipeConn struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

func (c *pipeConn) send(format string, args ...any) error {
	_, err := fmt.Fprintf(c.w, format+"\r\n", args...)
	return err
}

// status reads one status line; "-ERR" is an error.
func (c *pipeConn) status() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "+OK") {
		return "", fmt.Errorf("server: %q", line)
	}
	return line, nil
}

// body reads a multi-line response up to its terminating ".", dot-unstuffed,
// and returns the octets counted as POP3 serves them before stuffing
// (CRLF line ends).
func (c *pipeConn) body(each func(line []byte)) (int64, error) {
	var n int64
	for {
		line, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return n, fmt.Errorf("line longer than %d octets", c.r.Size())
		}
		if err != nil {
			return n, err
		}
		if line[0] == '.' {
			if len(line) == 3 && line[1] == '\r' {
				return n, nil
			}
			line = line[1:]
		}
		if each != nil {
			each(line)
		}
		n += int64(len(line))
	}
}

// rawPipelined is rawFetch with a window of depth RETRs: LIST, then RETR
// every message with up to depth outstanding, checking each one's size
// against LIST, DELE each once read (retrAndDele), and QUIT.
func rawPipelined(addr, user, passFile string, useTLS bool, caFile, serverName string, depth int) error {
	pass, err := os.ReadFile(passFile)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Minute))
	if useTLS {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", caFile)
		}
		tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: serverName})
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	c := &pipeConn{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 4<<10)}
	if _, err := c.status(); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	// CAPA: pipelining without the server's word would be a protocol
	// violation (RFC 2449 section 6.6), and the ceiling would be wrong.
	if err := c.send("CAPA"); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	if _, err := c.status(); err != nil {
		return fmt.Errorf("CAPA: %w", err)
	}
	pipelining := false
	if _, err := c.body(func(l []byte) { pipelining = pipelining || strings.TrimSpace(string(l)) == "PIPELINING" }); err != nil {
		return err
	}
	if !pipelining {
		return errors.New("the server does not advertise PIPELINING")
	}
	// USER, PASS and LIST in one write: the login costs one round trip.
	c.send("USER %s", user)
	c.send("PASS %s", strings.TrimRight(string(pass), "\r\n"))
	c.send("LIST")
	if err := c.w.Flush(); err != nil {
		return err
	}
	for _, cmd := range []string{"USER", "PASS", "LIST"} {
		if _, err := c.status(); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
	}
	var sizes []int64
	var listErr error
	if _, err := c.body(func(l []byte) {
		f := strings.Fields(string(l))
		if len(f) != 2 {
			listErr = fmt.Errorf("LIST line %q", l)
			return
		}
		num, err1 := strconv.Atoi(f[0])
		size, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || num != len(sizes)+1 {
			listErr = fmt.Errorf("LIST line %q", l)
			return
		}
		sizes = append(sizes, size)
	}); err != nil {
		return err
	}
	if listErr != nil {
		return listErr
	}

	rep, err := retrAndDele(c, sizes, depth)
	if err != nil {
		return err
	}
	// The server deletes at QUIT (the UPDATE state): wait for its answer.
	if err := c.send("QUIT"); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	if _, err := c.status(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// pendingCmd is a command sent whose response has not been read: RETR or
// DELE of message num (1-based).
type pendingCmd struct {
	retr bool
	num  int
}

// retrAndDele RETRs every message with depth RETRs in flight and DELEs each
// one once it has been read: when the answer to RETR i is in, DELE i and
// the next RETR leave in one write. Responses come in the order of the
// commands (RFC 2449 section 6.6), so a FIFO of what was sent says what
// each response answers. The DELEs ride along with the RETRs and cost no
// round trip of their own; a DELE's answer is a line, so the few extra
// outstanding commands cannot fill a socket buffer.
func retrAndDele(c *pipeConn, sizes []int64, depth int) (rawReport, error) {
	var rep rawReport
	depth = max(depth, 1)
	var fifo []pendingCmd
	next := 1 // the next message to RETR
	send := func(p pendingCmd) error {
		verb := "DELE"
		if p.retr {
			verb = "RETR"
		}
		fifo = append(fifo, p)
		return c.send("%s %d", verb, p.num)
	}
	for ; next <= len(sizes) && next <= depth; next++ {
		if err := send(pendingCmd{retr: true, num: next}); err != nil {
			return rep, err
		}
	}
	if err := c.w.Flush(); err != nil {
		return rep, err
	}
	for len(fifo) > 0 {
		p := fifo[0]
		fifo = fifo[1:]
		if !p.retr {
			if _, err := c.status(); err != nil {
				return rep, fmt.Errorf("DELE %d: %w", p.num, err)
			}
			continue
		}
		if _, err := c.status(); err != nil {
			return rep, fmt.Errorf("RETR %d: %w", p.num, err)
		}
		n, err := c.body(nil)
		if err != nil {
			return rep, fmt.Errorf("RETR %d: %w", p.num, err)
		}
		if n != sizes[p.num-1] {
			return rep, fmt.Errorf("RETR %d: %d octets, LIST said %d", p.num, n, sizes[p.num-1])
		}
		rep.Messages++
		rep.Bytes += n
		if err := send(pendingCmd{num: p.num}); err != nil {
			return rep, err
		}
		if next <= len(sizes) {
			if err := send(pendingCmd{retr: true, num: next}); err != nil {
				return rep, err
			}
			next++
		}
		if err := c.w.Flush(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}
