package reliability

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"time"
)

// Served describes what a POP3 server sends for one RETR.
type Served struct {
	Digest string
	Size   int64
}

// RawServed logs in to the POP3S server at addr with a minimal client
// written here (independent of package pop3), lists UIDL and RETRs every
// message, returning the digest and size of each message's bytes as served
// after dot-unstuffing (RFC 1939 §3: only CRLF ends a line), keyed by UIDL.
// It ends with QUIT and deletes nothing.
func RawServed(t T, addr string, tc *tls.Config, user, pass string) map[string]Served {
	t.Helper()
	out, err := rawServed(addr, tc, user, pass)
	if err != nil {
		t.Fatalf("raw RETR from %s: %v", addr, err)
	}
	return out
}

func rawServed(addr string, tc *tls.Config, user, pass string) (map[string]Served, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tc)
	if err != nil {
		return nil, err
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
	if _, err := status(""); err != nil {
		return nil, err
	}
	if _, err := status("USER " + user); err != nil {
		return nil, err
	}
	if _, err := status("PASS " + pass); err != nil {
		return nil, err
	}
	if _, err := status("UIDL"); err != nil {
		return nil, err
	}
	var nums, uids []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "." {
			break
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("UIDL line %q", line)
		}
		nums, uids = append(nums, f[0]), append(uids, f[1])
	}
	out := map[string]Served{}
	for i, n := range nums {
		if _, err := status("RETR " + n); err != nil {
			return nil, err
		}
		h := sha256.New()
		size, err := unstuff(br, h)
		if err != nil {
			return nil, fmt.Errorf("RETR %s: %w", n, err)
		}
		out[uids[i]] = Served{Digest: hex.EncodeToString(h.Sum(nil)), Size: size}
	}
	status("QUIT")
	return out, nil
}

// unstuff copies a multi-line response body from br to w until the
// terminating CRLF "." CRLF, removing the stuffed dot of lines that start
// with "." (only CRLF ends a line; bare CR and LF are data).
func unstuff(br *bufio.Reader, w hash.Hash) (int64, error) {
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
