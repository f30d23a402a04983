package config

import "testing"

// BenchmarkParseExample measures parsing the full example configuration.
func BenchmarkParseExample(b *testing.B) {
	data := Example()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseManyErrors measures the error path with 28 problems.
func BenchmarkParseManyErrors(b *testing.B) {
	data := []byte(mustRead(b, "testdata/many_errors.yaml"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err == nil {
			b.Fatal("no error")
		}
	}
}
