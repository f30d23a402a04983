package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Workload is one mailbox shape: Count messages of Size octets each, Size
// counted as served by POP3 (CRLF line ends, before dot-stuffing, which the
// generator never needs: no line starts with ".").
type Workload struct {
	Name  string
	Count int
	Size  int64
}

// Bytes is the total served size of the workload.
func (w Workload) Bytes() int64 { return int64(w.Count) * w.Size }

// Describe renders e.g. "1000 × 20 kB".
func (w Workload) Describe() string {
	return fmt.Sprintf("%d × %s", w.Count, humanBytes(w.Size))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%d MB", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%d kB", n/1000)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// bodyLine is the length of a full body line without its line end, as in
// base64 bodies (RFC 2045 section 6.8 allows 76).
const bodyLine = 76

// alphabet is what body lines are made of: the base64 alphabet, so no line
// starts with "." (no dot-stuffing changes the size on the wire) and the
// message is 7-bit.
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// header returns the header section of message idx (0-based) with LF line
// ends, ending with the empty line that separates it from the body.
func header(wl Workload, idx int) string {
	lines := []string{
		fmt.Sprintf("Return-Path: <sender-%d@isp.example>", idx%97),
		fmt.Sprintf("Received: from mx%d.isp.example (mx%d.isp.example [192.0.2.%d])", idx%3, idx%3, 10+idx%3),
		fmt.Sprintf("\tby pop.isp.example with ESMTPS id bench%s%07d", wl.Name, idx),
		"\tfor <bench@isp.example>; Mon, 01 Jan 2024 00:00:00 +0000",
		fmt.Sprintf("From: \"Bench Sender %d\" <sender-%d@isp.example>", idx%97, idx%97),
		"To: <bench@isp.example>",
		fmt.Sprintf("Subject: popconn bench %s message %d of %d", wl.Name, idx+1, wl.Count),
		fmt.Sprintf("Date: Mon, 01 Jan 2024 %02d:%02d:%02d +0000", idx/3600%24, idx/60%60, idx%60),
		fmt.Sprintf("Message-ID: <bench-%s-%d-%d@bench.example>", wl.Name, wl.Size, idx),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=us-ascii",
		"Content-Transfer-Encoding: 7bit",
		"",
	}
	return strings.Join(lines, "\n") + "\n"
}

// rng is xorshift64*: deterministic, fast, and good enough for filler text.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 2685821657736338717
}

// bodyLines returns the lengths (without line end) of the body lines so that
// the body is exactly wire octets on the wire (each line plus CRLF).
func bodyLines(wire int64) (full int64, tail []int) {
	full = wire / (bodyLine + 2)
	switch rem := int(wire % (bodyLine + 2)); {
	case rem == 0:
	case rem >= 2:
		tail = []int{rem - 2}
	default: // rem == 1: no line is 1 octet long; shorten one full line
		if full == 0 {
			return 0, nil // cannot happen for the sizes WriteMessage accepts
		}
		full--
		tail = []int{bodyLine - 1, 0}
	}
	return full, tail
}

// WriteMessage writes message idx of wl to w with LF line ends, as a maildir
// stores it, and returns the octets written (the maildir S= size). Served
// with CRLF the message is exactly wl.Size octets. The content depends only
// on wl and idx.
func WriteMessage(w io.Writer, wl Workload, idx int) (int64, error) {
	h := header(wl, idx)
	hdrWire := int64(len(h) + strings.Count(h, "\n"))
	if wl.Size < hdrWire+2 {
		return 0, fmt.Errorf("bench: message size %d is below the header size %d", wl.Size, hdrWire+2)
	}
	full, tail := bodyLines(wl.Size - hdrWire)
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(w, 64<<10)
	}
	n, _ := bw.WriteString(h)
	written := int64(n)
	r := rng(uint64(idx)*0x9E3779B97F4A7C15 ^ uint64(wl.Size) ^ 0x5851F42D4C957F2D)
	if r == 0 {
		r = 1
	}
	var line [bodyLine + 1]byte
	fill := func(n int) {
		for i := 0; i < n; {
			v := r.next()
			for k := 0; k < 10 && i < n; k++ {
				line[i] = alphabet[v&63]
				v >>= 6
				i++
			}
		}
		line[n] = '\n'
		m, _ := bw.Write(line[:n+1])
		written += int64(m)
	}
	for i := int64(0); i < full; i++ {
		fill(bodyLine)
	}
	for _, n := range tail {
		fill(n)
	}
	if err := bw.Flush(); err != nil {
		return written, err
	}
	return written, nil
}

// Seed writes the workload into maildir/new, one file per message, owned by
// uid:gid (when running as root), with Dovecot-style names carrying S= (the
// stored size) and W= (the served size) so Dovecot need not read a file to
// answer LIST. runID makes the names (and so the UIDLs) unique per run.
func Seed(maildir string, wl Workload, runID int, uid, gid int) error {
	buf := bufio.NewWriterSize(nil, 256<<10)
	for i := 0; i < wl.Count; i++ {
		tmp := filepath.Join(maildir, "tmp", fmt.Sprintf("seed-%d-%d", runID, i))
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("bench: seed: %w", err)
		}
		buf.Reset(f)
		stored, err := WriteMessage(buf, wl, i)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && os.Geteuid() == 0 {
			err = os.Chown(tmp, uid, gid)
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("bench: seed %s: %w", tmp, err)
		}
		name := fmt.Sprintf("%d.M%07dP%d.popconn-bench,S=%d,W=%d", 1704067200+runID, i, runID, stored, wl.Size)
		if err := os.Rename(tmp, filepath.Join(maildir, "new", name)); err != nil {
			return fmt.Errorf("bench: seed: %w", err)
		}
	}
	return nil
}
