package reliability

import (
	"fmt"
	"strconv"
	"strings"
)

// GenMessage returns message seq: CRLF line ends, a unique X-Test-Seq
// header and Message-ID, a body of 20 to 80 lines whose length depends on
// seq, and a few lines starting with "." to exercise dot-stuffing on both
// protocols.
func GenMessage(seq int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Return-Path: <sender-%d@isp.example>\r\n", seq)
	fmt.Fprintf(&b, "From: Sender %d <sender-%d@isp.example>\r\n", seq, seq)
	b.WriteString("To: sales@isp.example\r\n")
	fmt.Fprintf(&b, "Subject: reliability message %d\r\n", seq)
	fmt.Fprintf(&b, "Message-ID: <rel-%d@isp.example>\r\n", seq)
	b.WriteString("Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "X-Test-Seq: %d\r\n", seq)
	b.WriteString("\r\n")
	lines := 20 + (seq*37)%61
	for i := 0; i < lines; i++ {
		switch i % 9 {
		case 4:
			fmt.Fprintf(&b, ".dot-leading line %d of message %d\r\n", i, seq)
		case 7:
			b.WriteString("..\r\n")
		default:
			fmt.Fprintf(&b, "line %d of message %d: %s\r\n", i, seq, strings.Repeat(strconv.Itoa(i%10), 10+(seq+i)%50))
		}
	}
	return []byte(b.String())
}

// seqOf returns the X-Test-Seq of msg, or -1.
func seqOf(msg []byte) int {
	v := headerValue(msg, "X-Test-Seq")
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}
