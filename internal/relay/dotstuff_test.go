package relay

import (
	"bytes"
	"testing"
)

// The bytes on the wire for a body, up to and including the terminator
// that DataCommand.Close appends ("\r\n.\r\n").
func TestDotStuffer(t *testing.T) {
	tests := []struct{ name, in, wire string }{
		{"empty", "", "\r\n.\r\n"},
		{"one line", "a\r\n", "a\r\n.\r\n"},
		{"no final break", "a", "a\r\n.\r\n"},
		{"leading dots doubled", ".a\r\n..b\r\nc.\r\n", "..a\r\n...b\r\nc.\r\n.\r\n"},
		{"lone dot line", "x\r\n.\r\ny\r\n", "x\r\n..\r\ny\r\n.\r\n"},
		{"dot first byte", ".", "..\r\n.\r\n"},
		{"bare LF becomes CRLF", "a\nb\n", "a\r\nb\r\n.\r\n"},
		{"bare CR kept", "a\rb\r\n", "a\rb\r\n.\r\n"},
		{"CR CR LF kept", "a\r\r\nb\r\n", "a\r\r\nb\r\n.\r\n"},
		{"dot after bare CR not a line start", "a\r.b\r\n", "a\r.b\r\n.\r\n"},
		{"bare CR opening a line, then a dot", "\r.\r\n", "\r.\r\n.\r\n"},
		{"final bare CR", "a\r", "a\r\r\n.\r\n"},
		{"blank lines", "a\r\n\r\n\r\n", "a\r\n\r\n\r\n.\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every way of cutting the input must give the same wire bytes.
			for chunk := 1; chunk <= len(tt.in)+1; chunk++ {
				var buf bytes.Buffer
				d := newDotStuffer(&buf)
				for i := 0; i < len(tt.in); i += chunk {
					d.Write([]byte(tt.in[i:min(i+chunk, len(tt.in))]))
				}
				if err := d.Finish(); err != nil {
					t.Fatal(err)
				}
				buf.WriteString("\r\n.\r\n") // what DataCommand.Close adds
				if got := buf.String(); got != tt.wire {
					t.Fatalf("chunk %d: wire %q, want %q", chunk, got, tt.wire)
				}
			}
		})
	}
}

// referenceStuff applies the rules one byte at a time, for comparison.
func referenceStuff(in []byte) string {
	var out []byte
	lineStart := true
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\n':
			out = append(out, '\r', '\n')
			lineStart = true
			continue
		case c == '\r' && i+1 < len(in) && in[i+1] == '\n':
			continue // the LF writes the CRLF
		case c == '.' && lineStart:
			out = append(out, '.')
		}
		out = append(out, c)
		lineStart = false
	}
	// The final line break is supplied by the terminator.
	s := string(out)
	if len(s) >= 2 && s[len(s)-2:] == "\r\n" {
		s = s[:len(s)-2]
	}
	return s + "\r\n.\r\n"
}

func FuzzDotStuffer(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n..\r\n", "a\r\r\nb", "x\ny\r", "\r\n\r\n."} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		var buf bytes.Buffer
		d := newDotStuffer(&buf)
		for i := 0; i < len(in); i += chunk {
			d.Write(in[i:min(i+chunk, len(in))])
		}
		if err := d.Finish(); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("\r\n.\r\n")
		if got, want := buf.String(), referenceStuff(in); got != want {
			t.Fatalf("wire %q, reference %q", got, want)
		}
	})
}
