package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/popconnector/popconnector/internal/tlsmode"
)

const exchangeHead = `postmaster: postmaster@corp.example
`

const exchangeMailbox = `mailboxes:
  - id: sales
    server: pop.isp.example
    username: sales
    password: env:POP_SALES
`

// The options of issue 4: routes, global mailboxes, undeliverable and
// notify, each with its defaults and its errors.
func TestExchangeOptions(t *testing.T) {
	valid := []struct {
		name, yaml string
		check      func(t *testing.T, c *Config)
	}{
		{"routes with defaults", exchangeHead + `routes:
  - name: primary
    host: exchange1.corp.example
  - name: backup
    host: "[192.0.2.10]"
    cost: 2
  - name: partners
    host: relay.corp.example
    port: 587
    address_spaces: ["*.net", contoso.com]
` + exchangeMailbox + "    deliver_to: [sales@corp.example]\n", func(t *testing.T, c *Config) {
			want := []Route{
				{Name: "primary", Delivery: Delivery{Host: "exchange1.corp.example", Port: 25, TLS: tlsmode.StartTLS, VerifyCertificate: true, Timeout: DefaultTimeout, MaxConnections: DefaultMaxConnections}, AddressSpaces: []string{"*"}, Cost: 1},
				{Name: "backup", Delivery: Delivery{Host: "[192.0.2.10]", Port: 25, TLS: tlsmode.StartTLS, VerifyCertificate: true, Timeout: DefaultTimeout, MaxConnections: DefaultMaxConnections}, AddressSpaces: []string{"*"}, Cost: 2},
				{Name: "partners", Delivery: Delivery{Host: "relay.corp.example", Port: 587, TLS: tlsmode.StartTLS, VerifyCertificate: true, Timeout: DefaultTimeout, MaxConnections: DefaultMaxConnections}, AddressSpaces: []string{"*.net", "contoso.com"}, Cost: 1},
			}
			if !reflect.DeepEqual(c.Routes, want) {
				t.Errorf("routes = %+v\nwant %+v", c.Routes, want)
			}
			if c.Delivery != want[0].Delivery {
				t.Errorf("Delivery = %+v, want the first route's", c.Delivery)
			}
		}},
		{"global mailbox, delete and notify", exchangeHead + `delivery: {host: exchange.corp.example}
notify:
  to: mailadmin@corp.example
  spam: true
  badmail: false
  too_large: false
loop_limit: 5
` + exchangeMailbox + `    type: global
    global:
      local_domains: [corp.example]
      rewrite: {"*@isp.example": "*@corp.example"}
    undeliverable: {action: delete}
`, func(t *testing.T, c *Config) {
			m := c.Mailboxes[0]
			if m.Type != MailboxGlobal || m.Global == nil || m.Global.Fallback != "postmaster@corp.example" {
				t.Errorf("global = %+v %+v, want fallback postmaster", m.Type, m.Global)
			}
			if !reflect.DeepEqual(m.Undeliverable.DeleteOnCodes, DefaultDeleteOnCodes) {
				t.Errorf("delete_on_codes = %q, want the default %q", m.Undeliverable.DeleteOnCodes, DefaultDeleteOnCodes)
			}
			if len(m.Undeliverable.DeleteCodes()) != 3 {
				t.Errorf("DeleteCodes = %v", m.Undeliverable.DeleteCodes())
			}
			want := Notify{To: "mailadmin@corp.example", Spam: true, UnknownRecipient: false, Badmail: false, RelayDenied: true, TooLarge: false}
			if c.Notify != want || c.LoopLimit != 5 {
				t.Errorf("notify = %+v loop_limit %d, want %+v 5", c.Notify, c.LoopLimit, want)
			}
		}},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}

	invalid := []struct {
		name, yaml string
		want       []string // "path: message part"
	}{
		{"delivery and routes", exchangeHead + "delivery: {host: exchange.corp.example}\nroutes: [{name: a, host: b.corp.example}]\n" + exchangeMailbox + "    deliver_to: a@corp.example\n",
			[]string{"routes: give either delivery"}},
		{"route problems", exchangeHead + `routes:
  - name: primary
    host: exchange
  - name: Primary
    host: "[2001:db8::1]"
    cost: 101
    address_spaces: [net, "*.net", "*.net"]
  - host: exchange.corp.example
` + exchangeMailbox + "    deliver_to: a@corp.example\n", []string{
			`routes[0].host: "exchange" is not a fully qualified domain name`,
			`routes[1].name: "Primary" is already used by routes[0]`,
			`routes[1].host: "[2001:db8::1]": write an IPv6 address literal as [IPv6:2001:db8::1]`,
			`routes[1].cost: must be between 1 and 100, got 101`,
			`routes[1].address_spaces: address space "net": a single label matches no domain`,
			`routes[1].address_spaces: address space "*.net" is listed twice`,
			`routes[2].name: required`,
		}},
		{"global problems", exchangeHead + "delivery: {host: exchange.corp.example}\n" + exchangeMailbox + `    type: global
    deliver_to: a@corp.example
    global: {local_domains: ["bad domain"], fallback: "Post Master <pm@corp.example>"}
    undeliverable: {action: leave, delete_on_codes: ["550 5.7.1"]}
  - id: info
    server: pop.isp.example
    username: info
    password: env:POP_INFO
    type: catchall
    undeliverable: {action: delete, delete_on_codes: ["450 4.7.1", "55x"]}
  - id: info2
    server: pop2.isp.example
    username: info
    password: env:POP_INFO
    type: global
`, []string{
			"mailboxes[0].deliver_to: a global mailbox takes its recipients from each message's header",
			`mailboxes[0].global: local domain "bad domain"`,
			`mailboxes[0].global: fallback "Post Master <pm@corp.example>" is not a bare email address`,
			"mailboxes[0].undeliverable.delete_on_codes: applies only with action: delete",
			`mailboxes[1].type: must be individual or global; got "catchall"`,
			`mailboxes[1].undeliverable.delete_on_codes[0]: "450 4.7.1" is not a permanent (5xx) reply`,
			`mailboxes[1].undeliverable.delete_on_codes[1]: reply code "55x"`,
			"mailboxes[2].global: required with type: global",
		}},
		{"bad action and notify", exchangeHead + "delivery: {host: exchange.corp.example}\nnotify: {to: nobody}\nloop_limit: 200\n" + exchangeMailbox + "    deliver_to: a@corp.example\n    undeliverable: {action: move}\n", []string{
			`notify.to: "nobody" is not a valid email address`,
			"loop_limit: must be between 1 and 100",
			`mailboxes[0].undeliverable.action: must be one of leave, delete, badmail; got "move"`,
		}},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse = %v, want *Errors", err)
			}
			got := make([]string, len(*errs))
			for i, e := range *errs {
				got[i] = e.Path + ": " + e.Msg
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					found = found || strings.HasPrefix(g, w) || strings.Contains(g, w)
				}
				if !found {
					t.Errorf("no problem %q among:\n%s", w, strings.Join(got, "\n"))
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
		})
	}
}
