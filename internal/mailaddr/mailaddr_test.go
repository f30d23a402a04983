package mailaddr

import (
	"strings"
	"testing"
)

// name253 is a 253-octet name of 63-octet labels: the longest allowed.
var (
	l63     = strings.Repeat("a", 63)
	l64     = strings.Repeat("a", 64)
	name253 = l63 + "." + l63 + "." + l63 + "." + strings.Repeat("b", 61)
	name254 = l63 + "." + l63 + "." + l63 + "." + strings.Repeat("b", 62)
)

type check struct {
	in      string
	wantErr string // "" = accepted; else a substring of the error
}

func run(t *testing.T, fn string, f func(string) error, tests []check) {
	t.Helper()
	for _, tt := range tests {
		err := f(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s(%q) = %v, want nil", fn, tt.in, err)
		case tt.wantErr != "" && err == nil:
			t.Errorf("%s(%q) = nil, want an error containing %q", fn, tt.in, tt.wantErr)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("%s(%q) = %q, want it to contain %q", fn, tt.in, err, tt.wantErr)
		}
	}
}

func TestHostname(t *testing.T) {
	if len(name253) != 253 || len(name254) != 254 {
		t.Fatal("fixture lengths are wrong")
	}
	run(t, "Hostname", Hostname, []check{
		{"exchange.corp.example", ""},
		{"EXCHANGE.Corp.Example", ""},
		{"localhost", ""},
		{"exchange", ""}, // single labels are a caller's policy (route)
		{"exchange.corp.example.", ""},
		{"exch-01.corp.example", ""},
		{"1exch.corp.example", ""},
		{"xn--bcher-kva.example", ""}, // bücher.example as A-label
		{"a.b.c9", ""},
		{l63 + ".example", ""},
		{name253, ""},
		{name253 + ".", ""}, // 254 characters with the root dot
		{"", "empty"},
		{".", "empty"},
		{"exchange..corp.example", "empty label"},
		{".corp.example", "empty label"},
		{"corp.example..", "empty label"},
		{l64 + ".example", "longer than 63 octets"},
		{name254, "longer than 253 octets"},
		{"exch_ange.corp.example", `"_" is not allowed`},
		{"_dmarc.corp.example", `"_" is not allowed`},
		{"-exch.corp.example", "starts or ends with a hyphen"},
		{"exch-.corp.example", "starts or ends with a hyphen"},
		{"exchange server.corp.example", `" " is not allowed`},
		{"exchange.corp.example\r\nX: y", `"\r" is not allowed`},
		{"exch\x00.example", `"\x00" is not allowed`},
		{"bücher.example", "is not allowed"}, // U-labels only in Domain
		{"192.0.2.1", "the last label is all digits"},
		{"999.1.1.1", "the last label is all digits"},
		{"192.0.2", "the last label is all digits"},
		{"2001:db8::1", `":" is not allowed`},
		{"[192.0.2.1]", `"[" is not allowed`},
		{"exchange.corp.example:25", `":" is not allowed`},
	})
}

func TestHost(t *testing.T) {
	run(t, "Host", Host, []check{
		{"pop.isp.example", ""},
		{"pop.isp.example.", ""},
		{"localhost", ""},
		{"192.0.2.1", ""},
		{"2001:db8::1", ""},
		{"::1", ""},
		{"::ffff:192.0.2.1", ""},
		{"", "neither an IP address nor a host name"},
		{"[192.0.2.1]", "neither an IP address nor a host name"},
		{"[2001:db8::1]", "neither an IP address nor a host name"},
		{"fe80::1%eth0", "neither an IP address nor a host name"},
		{"192.0.2.300", "neither an IP address nor a host name"},
		{"pop_3.isp.example", "neither an IP address nor a host name"},
		{" pop.isp.example", "neither an IP address nor a host name"},
	})
}

func TestDomain(t *testing.T) {
	run(t, "Domain", Domain, []check{
		{"corp.example", ""},
		{"xn--bcher-kva.example", ""},
		{"bücher.example", ""},
		{"пример.испытание", ""},
		{"例え.テスト", ""},
		{"localhost", ""},
		{l63 + ".example", ""},
		{name253, ""},
		{"corp.example.", "empty label"}, // no root dot in a mail domain
		{"", "empty"},
		{name254, "longer than 253 octets"},
		{l64 + ".example", "longer than 63 octets"},
		{"corp_x.example", `"_" is not allowed`},
		{"corp example", `" " is not allowed`},
		{"bü cher.example", `" " is not allowed`},
		{"bücher\u00a0.example", "is not allowed"},
		{"corp.example\xff", "invalid UTF-8"},
		{"b\u200ebücher.example", "is not allowed"}, // bidi mark
		{"☃.example", "is not allowed"},
		{"192.0.2.1", "the last label is all digits"},
		{"[192.0.2.1]", `"[" is not allowed`},
	})
}

func TestAddressLiteral(t *testing.T) {
	run(t, "AddressLiteral", AddressLiteral, []check{
		{"[192.0.2.10]", ""},
		{"[IPv6:2001:db8::1]", ""},
		{"[ipv6:::1]", ""},
		{"[IPv6:::ffff:192.0.2.1]", ""},
		{"[2001:db8::1]", "write an IPv6 address literal as [IPv6:2001:db8::1]"},
		{"[IPv6:192.0.2.1]", "not a valid IPv6 address literal"},
		{"[192.0.2.300]", "not a valid IP address literal"},
		{"[exchange.corp.example]", "not a valid IP address literal"},
		{"[x-tag:abc]", "not a valid IP address literal"}, // General-address-literal
		{"[]", "not a valid IP address literal"},
		{"[192.0.2.1", "must be enclosed in [ and ]"},
		{"192.0.2.1]", "must be enclosed in [ and ]"},
		{"192.0.2.1", "must be enclosed in [ and ]"},
		{"[", "must be enclosed in [ and ]"},
		{"", "must be enclosed in [ and ]"},
		{"[ 192.0.2.1]", "not a valid IP address literal"},
	})
}

func TestMailbox(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + l63 + "." + l63 + "." + l63 + ".ex" // 64+1+194 = 259
	run(t, "Mailbox", Mailbox, []check{
		{"postmaster@corp.example", ""},
		{"John.Smith+tag@corp.example", ""},
		{"!#$%&'*+-/=?^_`{|}~@corp.example", ""},
		{"user@localhost", ""},
		{"user@[192.0.2.1]", ""},
		{"user@[IPv6:2001:db8::1]", ""},
		{"jörg@corp.example", ""},   // SMTPUTF8 local part
		{"jörg@bücher.example", ""}, // and U-label domain
		{"user@xn--bcher-kva.example", ""},
		{strings.Repeat("a", 64) + "@corp.example", ""},
		{"", "no @domain"},
		{"postmaster", "no @domain"},
		{"@corp.example", "nothing before the @"},
		{"user@", "nothing after the @"},
		{strings.Repeat("a", 65) + "@corp.example", "longer than 64 octets"},
		{long, "longer than 254 octets"},
		{`"john doe"@corp.example`, "quoted local part"},
		{`"john"@corp.example`, "quoted local part"},
		{"john doe@corp.example", `" " is not allowed`},
		{"a@b@corp.example", `"@" is not allowed`},
		{".user@corp.example", "a dot at the start"},
		{"user.@corp.example", "a dot at the start or end"},
		{"us..er@corp.example", "two in a row"},
		{"user(comment)@corp.example", `"(" is not allowed`},
		{"Name <user@corp.example>", `" " is not allowed`},
		{"user\r\n@corp.example", `"\r" is not allowed`},
		{"us\x00er@corp.example", `"\x00" is not allowed`},
		{"us\u0085er@corp.example", "U+0085 is not allowed"},
		{"us\u2028er@corp.example", "U+2028 is not allowed"},
		{"us\xffer@corp.example", "invalid UTF-8"},
		{"user@corp_x.example", "invalid domain "},
		{"user@corp.example.", "invalid domain "},
		{"user@192.0.2.1", "invalid domain "},
		{"user@[2001:db8::1]", "write an IPv6 address literal"},
		{"user@[corp.example]", "invalid domain "},
		{"user@-corp.example", "invalid domain "},
		{"user@corp..example", "invalid domain "},
		{" user@corp.example", `" " is not allowed`},
		{"user@corp.example ", "invalid domain "},
	})
}

func TestWireSafe(t *testing.T) {
	run(t, "WireSafe", WireSafe, []check{
		{"user@corp.example", ""},
		{`"john doe"@corp.example`, ""},
		{"jörg@bücher.example", ""},
		{"postmaster", ""},
		{strings.Repeat("a", 320), ""},
		{"", "empty address"},
		{strings.Repeat("a", 321), "longer than 320 octets"},
		{"a@b\r\nRCPT TO:<x@y>", "control character U+000D"},
		{"a\x00@b", "control character U+0000"},
		{"a\x7f@b", "control character U+007F"},
		{"a\t@b", "control character U+0009"},
		{"a>@b", `'>' in address`},
		{"<a@b", `'<' in address`},
	})
}

func FuzzMailbox(f *testing.F) {
	for _, s := range []string{"a@b.example", "jörg@bücher.example", "a@[IPv6:::1]", `"x"@y`, "a@192.0.2.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Mailbox(s) != nil {
			return
		}
		// An accepted mailbox is safe on the wire and needs no quoting.
		if err := WireSafe(s); err != nil {
			t.Fatalf("Mailbox accepts %q but WireSafe refuses it: %v", s, err)
		}
		local := s[:strings.LastIndexByte(s, '@')]
		if strings.ContainsAny(local, " \t\"\\()<>,;:@[]") {
			t.Fatalf("Mailbox accepts %q, whose local part needs quoting", s)
		}
	})
}
