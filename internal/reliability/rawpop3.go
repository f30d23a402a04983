package reliability

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Served describes what a POP3 server sends for one RETR.
type Served struct {
	Digest string
	Size   int64
	// ListSize is what LIST said for the message. It differs from Size
	// when the server does not send what it listed (Dovecot 2.3 and a
	// first line that starts with ".").
	ListSize int64
	// Data are the bytes, from RawServedBytes only.
	Data []byte
}

// RawServed logs in to the POP3S server at addr with a minimal client
// written here (independent of package pop3), lists UIDL and LIST and RETRs
// every message, returning the digest and size of each message's bytes as
// served after dot-unstuffing (RFC 1939 §3: only CRLF ends a line), keyed by
// UIDL. A RETR that does not give the listed size may have left the rest of
// the message on the wire, so the client logs in again for the next one. It
// ends with QUIT and deletes nothing.
func RawServed(t T, addr string, tc *tls.Config, user, pass string) map[string]Served {
	t.Helper()
	return rawServedAll(t, addr, tc, user, pass, false)
}

// RawServedBytes is RawServed keeping the bytes of every message.
func RawServedBytes(t T, addr string, tc *tls.Config, user, pass string) map[string]Served {
	t.Helper()
	return rawServedAll(t, addr, tc, user, pass, true)
}

func rawServedAll(t T, addr string, tc *tls.Config, user, pass string, keep bool) map[string]Served {
	t.Helper()
	out := map[string]Served{}
	for {
		more, err := rawServed(addr, tc, user, pass, out, keep)
		if err != nil {
			t.Fatalf("raw RETR from %s: %v", addr, err)
		}
		if !more {
			return out
		}
	}
}

// rawServed RETRs, in one session, the messages not yet in out, adding
// them to it. It returns more = true when it stopped after a RETR whose
// size differs from LIST (the session may be out of step).
func rawServed(addr string, tc *tls.Config, user, pass string, out map[string]Served, keep bool) (more bool, err error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReaderSize(conn, 64<<10)
	status := func(cmd string) (string, error) {
		if cmd != "" {
			if _, err := io.WriteString(conn, cmd+"\r\n"); err != nil {
				return "", err
			}
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(line, "+OK") {
			if strings.HasPrefix(cmd, "PASS ") {
				cmd = "PASS ***"
			}
			return "", fmt.Errorf("%s: %s", cmd, strings.TrimSpace(line))
		}
		return line, nil
	}
	// listing reads a multi-line "num value" reply into a map by number.
	listing := func(cmd string) (nums []string, vals map[string]string, err error) {
		if _, err := status(cmd); err != nil {
			return nil, nil, err
		}
		vals = map[string]string{}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return nil, nil, err
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "." {
				return nums, vals, nil
			}
			f := strings.Fields(line)
			if len(f) != 2 {
				return nil, nil, fmt.Errorf("%s line %q", cmd, line)
			}
			nums, vals[f[0]] = append(nums, f[0]), f[1]
		}
	}
	if _, err := status(""); err != nil {
		return false, err
	}
	if _, err := status("USER " + user); err != nil {
		return false, err
	}
	if _, err := status("PASS " + pass); err != nil {
		return false, err
	}
	nums, uids, err := listing("UIDL")
	if err != nil {
		return false, err
	}
	_, sizes, err := listing("LIST")
	if err != nil {
		return false, err
	}
	for _, n := range nums {
		if _, done := out[uids[n]]; done {
			continue
		}
		listed, err := strconv.ParseInt(sizes[n], 10, 64)
		if err != nil {
			return false, fmt.Errorf("LIST %s: size %q", n, sizes[n])
		}
		if _, err := status("RETR " + n); err != nil {
			return false, err
		}
		h := sha256.New()
		var data bytes.Buffer
		w := io.Writer(h)
		if keep {
			w = io.MultiWriter(h, &data)
		}
		size, err := unstuff(br, w)
		if err != nil {
			return false, fmt.Errorf("RETR %s: %w", n, err)
		}
		s := Served{Digest: hex.EncodeToString(h.Sum(nil)), Size: size, ListSize: listed}
		if keep {
			s.Data = data.Bytes()
		}
		out[uids[n]] = s
		if size != listed {
			return true, nil // no QUIT: the reply to it may be the message's rest
		}
	}
	status("QUIT")
	return false, nil
}

// unstuff copies a multi-line response body from br to w until the
// terminating CRLF "." CRLF, removing the stuffed dot of lines that start
// with "." (only CRLF ends a line; bare CR and LF are data).
func unstuff(br *bufio.Reader, w io.Writer) (int64, error) {
	var n int64
	var out []byte
	flush := func() {
		w.Write(out)
		n += int64(len(out))
		out = out[:0]
	}
	bol := true   // at the beginning of a line
	var prev byte // previous byte of the body as served
	for {
		c, err := br.ReadByte()
		if err != nil {
			return n, fmt.Errorf("body ended before the terminator: %w", err)
		}
		if bol && c == '.' {
			next, err := br.Peek(2)
			if err == nil && next[0] == '\r' && next[1] == '\n' {
				br.Discard(2)
				flush()
				// The CRLF before the "." belongs to the message.
				return n, nil
			}
			c, err = br.ReadByte() // the stuffed dot is dropped
			if err != nil {
				return n, err
			}
		}
		out = append(out, c)
		bol = c == '\n' && prev == '\r'
		prev = c
		if len(out) >= 32<<10 {
			flush()
		}
	}
}
