// Package message looks at raw RFC 5322 messages as they stream past,
// without holding them: it finds the end of the header section, keeps a
// bounded copy of the header for parsing (with emersion/go-message), and
// notes whether the message carries 8-bit data.
//
// Guarantees:
//   - An Inspector never changes or holds the bytes it observes beyond
//     MaxHeaderBytes of header; memory is flat whatever the message size.
//   - It accepts any input, including no header, bare LF or bare CR line
//     ends, NUL bytes and invalid UTF-8: a header it cannot parse yields
//     empty fields and a ParseError, never a panic.
//
// What it cannot do: it does not validate MIME structure; a message is
// relayed as it came whatever its MIME says.
package message

import (
	"bufio"
	"bytes"
	"fmt"
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
	n       int64
	parsed  *Summary
}

// NewInspector returns an Inspector at the start of a message.
func NewInspector() *Inspector { return &Inspector{inHeader: true} }

// Write observes p; it never fails.
func (in *Inspector) Write(p []byte) (int, error) {
	in.n += int64(len(p))
	if !in.eight {
		for _, c := range p {
			if c >= 0x80 {
				in.eight = true
				break
			}
		}
	}
	if !in.inHeader {
		return len(p), nil
	}
	end := in.headerEnd(p)
	keep := p
	if end >= 0 {
		keep = p[:end]
		in.inHeader = false
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

// Summary is what the pipeline needs from a message's header.
type Summary struct {
	Size       int64
	MessageID  string // without angle brackets; "" when absent or unparsable
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
	// textproto.ReadHeader wants the terminating blank line; a truncated
	// or header-only message lacks it.
	if !bytes.HasSuffix(raw, []byte("\n\n")) && !bytes.HasSuffix(raw, []byte("\n\r\n")) {
		raw = append(append([]byte{}, raw...), "\r\n\r\n"...)
	}
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		s.ParseError = fmt.Errorf("message: header: %w", err)
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
	return s
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
