package config

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and keeps its promises on any
// input: a returned Config validates and has ports on every server; an
// error is a non-empty *Errors ordered by line.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed fixtures: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("mailboxes: [{<<: {id: x}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse returned a Config that fails Validate: %v", verr)
			}
			for i, m := range c.Mailboxes {
				if _, _, err := net.SplitHostPort(m.Server); err != nil {
					t.Fatalf("mailboxes[%d].server %q has no port", i, m.Server)
				}
			}
			return
		}
		var errs *Errors
		if !errors.As(err, &errs) || len(*errs) == 0 {
			t.Fatalf("error %v (%T) is not a non-empty *Errors", err, err)
		}
		last := 0
		for _, e := range *errs {
			if e.Msg == "" {
				t.Fatalf("empty message in %v", *errs)
			}
			if e.Line != 0 && e.Line < last {
				t.Fatalf("problems not ordered by line: %v", *errs)
			}
			if e.Line != 0 {
				last = e.Line
			}
		}
	})
}
