package config

import _ "embed"

//go:embed testdata/example.yaml
var example []byte

// Example returns a commented configuration showing every setting with its
// default or a typical value. Parse accepts it as is; `popconn init` writes
// it out and the README quotes it.
func Example() []byte { return append([]byte(nil), example...) }
