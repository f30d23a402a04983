// Package message looks at raw RFC 5322 messages as they stream past,
// without holding them: it finds the end of the header section, keeps a
// bounded copy of the header for parsing (with emersion/go-message), notes
// whether the message carries 8-bit data, and takes a content fingerprint
// that tells two copies of one message from two messages that share a
// Message-ID.
//
// Guarantees:
//   - An Inspector never changes or holds the bytes it observes beyond
//     MaxHeaderBytes of header; memory is flat whatever the message size.
//   - It accepts any input, including no header, bare LF or bare CR line
//     ends, NUL bytes and invalid UTF-8: a header it cannot parse yields
//     empty fields and a ParseError, never a panic.
//   - The Summary does not depend on how the stream is cut into writes.
//   - Copies of one message that differ only in trace fields (Received,
//     Return-Path, Delivered-To, …) or in bare LF versus CRLF line ends
//     have the same Fingerprint; a changed body or Date, From, Subject or
//     Message-ID changes it. A header that cannot be trusted has
//     none ("").
//
// What it cannot do: it does not validate MIME structure; a message is
// relayed as it came whatever its MIME says. It sees no field past
// MaxHeaderBytes of header.
package message

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// MaxHeaderBytes bounds the header copy kept for parsing. Headers larger
// than this (10,000 fields, say) are parsed as far as they were kept.
const MaxHeaderBytes = 1 << 20

// Inspector is an io.Writer that observes a message stream.
type Inspector struct {
	header    bytes.Buffer
	inHeader  bool
	truncated bool
	eight     bool
	// lineLen and lineCR carry the current header line's state across
	// writes: its length so far, and whether it is exactly one CR.
	lineLen int
	lineCR  bool
	// body hashes the body as it passes, its bare LFs as CRLF; bodyCR
	// says whether the last body byte hashed was a CR, for a CRLF cut
	// between two writes.
	body   hash.Hash
	bodyCR bool
	n      int64
	parsed *Summary
}

// NewInspector returns an Inspector at the start of a message.
func NewInspector() *Inspector { return &Inspector{inHeader: true, body: sha256.New()} }

// Write observes p; it never fails.
func (in *Inspector) Write(p []byte) (int, error) {
	in.n += int64(len(p))
	if !in.eight {
		in.eight = has8Bit(p)
	}
	if !in.inHeader {
		in.hashBody(p)
		return len(p), nil
	}
	end := in.headerEnd(p)
	keep := p
	if end >= 0 {
		keep = p[:end]
		in.inHeader = false
		in.hashBody(p[end:])
	}
	if room := MaxHeaderBytes - in.header.Len(); room > 0 {
		if len(keep) > room {
			keep = keep[:room]
			in.truncated = true
		}
		in.header.Write(keep)
	} else if len(keep) > 0 {
		in.truncated = true
	}
	return len(p), nil
}

// has8Bit reports a byte >= 0x80 in p, eight bytes at a time: with the body
// hash it is the Inspector's cost per byte, and it runs on every message.
func has8Bit(p []byte) bool {
	for ; len(p) >= 8; p = p[8:] {
		if binary.LittleEndian.Uint64(p)&0x8080808080808080 != 0 {
			return true
		}
	}
	for _, c := range p {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// headerEnd returns the index in p just past the blank line that ends the
// header (a line holding nothing, or only CR, before its LF), or -1. A
// message that starts with a blank line has an empty header.
func (in *Inspector) headerEnd(p []byte) int {
	for i, c := range p {
		switch c {
		case '\n':
			if in.lineLen == 0 || (in.lineLen == 1 && in.lineCR) {
				return i + 1
			}
			in.lineLen, in.lineCR = 0, false
		case '\r':
			in.lineLen++
			in.lineCR = in.lineLen == 1
		default:
			in.lineLen++
			in.lineCR = false
		}
	}
	return -1
}

// hashBody adds body bytes to the body hash with every bare LF written as
// CRLF. POP3 servers disagree on line ends (Dovecot serves a stored bare
// LF as CRLF, others pass it through, RFC 1939 wants CRLF), so two copies
// of one message may differ only there, and the relay sends a bare LF as
// CRLF (RFC 5321 §2.3.8): Exchange gets the same bytes from either copy.
// A bare CR is left alone: the relay passes it on and no server is known
// to rewrite it, so it is content, not a line end.
func (in *Inspector) hashBody(p []byte) {
	if len(p) == 0 {
		return
	}
	start := 0
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		prevCR := in.bodyCR
		if i > 0 {
			prevCR = p[i-1] == '\r'
		}
		if !prevCR {
			in.body.Write(p[start:i])
			in.body.Write(crlf)
			start = i + 1
		}
		i++
	}
	in.body.Write(p[start:])
	in.bodyCR = p[len(p)-1] == '\r'
}

var crlf = []byte("\r\n")

// Summary is what the pipeline needs from a message's header.
type Summary struct {
	Size       int64
	MessageID  string // without angle brackets; "" when absent or unusable (see MessageIDField)
	ReturnPath string // envelope sender the ISP recorded; "" with NullSender for <>
	NullSender bool   // Return-Path: <>
	Sender     string // Sender: address
	From       string // first From: address
	Has8Bit    bool   // any byte >= 0x80 anywhere (needs BODY=8BITMIME)
	// HeaderTruncated reports a header larger than MaxHeaderBytes.
	HeaderTruncated bool
	// Header is the parsed header (possibly partial); nil when none could be read.
	Header *mail.Header
	// ParseError describes a header that could not be parsed cleanly.
	ParseError error
	// MessageIDField reports that the header copy holds a Message-ID field:
	// a line that starts, in any case, with "Message-ID", optional spaces or
	// tabs and ":" (a line starts after LF or CR, or at the header's start
	// after a UTF-8 byte-order mark). It is read from the raw bytes, so it
	// holds for a header that did not parse (a byte-order mark, a
	// continuation line or an mbox "From " line first): a Message-ID must
	// not be added then. False for a field past MaxHeaderBytes.
	//
	// When the header did not parse, MessageID is still filled from the
	// first such field if its value is safe to use as found: on one line
	// (not folded), printable ASCII without spaces, and not empty once
	// spaces and angle brackets are trimmed.
	MessageIDField bool
	// Fingerprint identifies the content for duplicate suppression: two
	// copies of one message fetched from different mailboxes or servers
	// have the same Fingerprint, a different message with the same
	// Message-ID almost certainly another. See fingerprint for what it
	// covers. It is "" when the header cannot be trusted to compare (no
	// header, a ParseError, HeaderTruncated). "" never suppresses a copy and
	// is never suppressed: compare it as equal to nothing, "" included.
	Fingerprint string
}

// Summary parses what was observed. Call it after the whole message was written.
func (in *Inspector) Summary() *Summary {
	if in.parsed != nil {
		return in.parsed
	}
	s := &Summary{Size: in.n, Has8Bit: in.eight, HeaderTruncated: in.truncated}
	in.parsed = s
	raw := in.header.Bytes()
	if len(bytes.TrimSpace(raw)) == 0 {
		return s
	}
	var rawID string
	s.MessageIDField, rawID = messageIDLine(raw)
	// textproto.ReadHeader wants the terminating blank line; a truncated
	// or header-only message lacks it.
	if !bytes.HasSuffix(raw, []byte("\n\n")) && !bytes.HasSuffix(raw, []byte("\n\r\n")) {
		raw = append(append([]byte{}, raw...), "\r\n\r\n"...)
	}
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		s.ParseError = fmt.Errorf("message: header: %w", err)
		s.MessageID = rawID
		return s
	}
	h := mail.Header{Header: gomessage.Header{Header: th}}
	s.Header = &h
	if id, err := h.MessageID(); err == nil {
		s.MessageID = id
	} else if v := strings.TrimSpace(h.Get("Message-Id")); v != "" {
		// Keep a malformed but present ID as found, minus brackets, so
		// that a redelivery carries the same one.
		s.MessageID = strings.Trim(v, "<> \t")
	}
	if rp := strings.TrimSpace(h.Get("Return-Path")); rp != "" {
		if rp == "<>" {
			s.NullSender = true
		} else if a := firstAddress(&h, "Return-Path"); a != "" {
			s.ReturnPath = a
		}
	}
	s.Sender = firstAddress(&h, "Sender")
	s.From = firstAddress(&h, "From")
	if !s.HeaderTruncated {
		s.Fingerprint = fingerprint(&h, in.body.Sum(nil))
	}
	return s
}

// fingerprintFields are the header fields a Fingerprint covers: those that
// say what the message is, and that no server on the way changes. Trace
// fields (Received, Return-Path, Delivered-To, X-Original-To, Envelope-To,
// X-Spam-*, …) differ between copies of one message and are left out. So
// are To and Cc: one message cross-posted to two lists reaches the same
// person as two copies that name different lists, and a reused
// Message-ID on another message shows in its Date, Subject or body.
var fingerprintFields = []string{"Date", "From", "Subject", "Message-Id"}

// fingerprint is "v1:" and the hex SHA-256 of, in order: a version tag;
// for each of fingerprintFields its lower-case name, the number of times it
// occurs, and each value in order as found, unfolded, with runs of spaces
// and tabs made one space and trimmed (not decoded: copies carry the same
// encoded words), each length-prefixed; then the SHA-256 of the body as
// hashBody saw it. Lengths and counts make the encoding unambiguous, so a
// field absent differs from a field present and empty. A new definition
// gets a new version prefix, so that fingerprints of different versions
// never compare equal.
func fingerprint(h *mail.Header, body []byte) string {
	f := sha256.New()
	f.Write([]byte("popconn message fingerprint v1\x00"))
	var num [binary.MaxVarintLen64]byte
	var v []byte
	for _, k := range fingerprintFields {
		vs := h.Values(k)
		f.Write([]byte(strings.ToLower(k)))
		f.Write(binary.AppendUvarint(num[:0], uint64(len(vs))))
		for _, raw := range vs {
			v = collapseSpace(v[:0], raw)
			f.Write(binary.AppendUvarint(num[:0], uint64(len(v))))
			f.Write(v)
		}
	}
	f.Write([]byte("body\x00"))
	f.Write(body)
	return "v1:" + hex.EncodeToString(f.Sum(nil))
}

// collapseSpace appends v to dst with each run of white space (space and
// tab, and the CR or LF of a folding the parser left) made one space, and
// none at either end. Bytes are compared, not runes: a value need not be
// UTF-8.
func collapseSpace(dst []byte, v string) []byte {
	space := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case ' ', '\t', '\r', '\n':
			space = true
		default:
			if space && len(dst) > 0 {
				dst = append(dst, ' ')
			}
			space = false
			dst = append(dst, c)
		}
	}
	return dst
}

// messageIDLine scans the raw header for a Message-ID field (see
// Summary.MessageIDField) and returns, from the first one, its value when
// it is safe to use as found.
func messageIDLine(raw []byte) (found bool, id string) {
	const name = "message-id"
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
	for i := 0; i < len(raw); i++ {
		if i > 0 && raw[i-1] != '\n' && raw[i-1] != '\r' {
			continue
		}
		if len(raw)-i < len(name)+1 || !strings.EqualFold(string(raw[i:i+len(name)]), name) {
			continue
		}
		rest := raw[i+len(name):]
		rest = rest[len(rest)-len(bytes.TrimLeft(rest, " \t")):]
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		return true, safeID(rest[1:])
	}
	return false, ""
}

// safeID is the Message-ID value at the start of v (what follows the
// colon) when it is one line of printable ASCII, else "".
func safeID(v []byte) string {
	end := bytes.IndexAny(v, "\r\n")
	if end >= 0 {
		next := v[end+1:]
		if v[end] == '\r' && len(next) > 0 && next[0] == '\n' {
			next = next[1:]
		}
		if len(next) > 0 && (next[0] == ' ' || next[0] == '\t') {
			return "" // folded onto the next line
		}
		v = v[:end]
	}
	id := strings.Trim(string(v), "<> \t")
	if id == "" {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return ""
		}
	}
	return id
}

func firstAddress(h *mail.Header, key string) string {
	list, err := h.AddressList(key)
	if err != nil || len(list) == 0 {
		// Return-Path is "<addr>" which AddressList accepts; a bare
		// address without brackets also parses. Anything else is unusable.
		return ""
	}
	return list[0].Address
}
