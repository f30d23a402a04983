package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/tlsmode"
)

type wantErr struct {
	path string
	line int
	msg  string // substring of Msg
}

// TestParseErrorFixtures parses each error fixture and compares the
// complete list of problems (path, line, message fragment) in order.
func TestParseErrorFixtures(t *testing.T) {
	literal := "must be a secret reference, not the secret itself"
	tests := []struct {
		file string
		want []wantErr
	}{
		{"err_unknown_key.yaml", []wantErr{
			{"delivery.smarthost", 4, "unknown key; valid keys here: host, port, tls"},
			{"mailboxes[0].pasword", 9, `unknown key; did you mean "password"?`},
		}},
		{"err_duplicate_key.yaml", []wantErr{
			{"delivery.host", 5, "key repeated; it is already set on line 3"},
		}},
		{"err_types.yaml", []wantErr{
			{"postmaster", 1, "expected text, got a list"},
			{"parallel_mailboxes", 2, "expected a whole number"},
			{"delivery.port", 5, "expected a whole number"},
			{"delivery.verify_certificate", 6, "expected true or false, got text"},
			{"delivery.auth", 7, "expected a mapping of settings, got text"},
			{"mailboxes[0].password", 12, "expected a secret reference"},
			{"mailboxes[0].deliver_to[0]", 13, "expected an address"},
			{"mailboxes[0].keep_days", 14, "expected a whole number"},
			{"notify.too_large", 16, "expected true or false, got text"},
		}},
		{"err_durations_sizes.yaml", []wantErr{
			{"poll_interval", 2, "invalid duration: a unit is required"},
			{"retry.interval", 4, "invalid duration: use a number and unit"},
			{"retry.max_interval", 5, "days must be a whole number"},
			{"retry.give_up_after", 6, "must be between 1s and 90d, got -1d"},
			{"delivery.timeout", 9, "must be between 1s and 10m, got 0s"},
			{"mailboxes[0].max_bytes_per_poll", 16, "invalid size: unknown unit"},
			{"mailboxes[0].poll_timeout", 17, "must be between 1s and 1d, got 25h"},
			{"mailboxes[0].timeout", 18, "invalid duration"},
		}},
		{"err_required.yaml", []wantErr{
			{"postmaster", 2, "required"},
			{"delivery.host", 2, "required"},
			{"mailboxes[0].id", 5, "required"},
			{"mailboxes[0].server", 5, "required"},
			{"mailboxes[0].username", 5, "required"},
			{"mailboxes[0].password", 5, "required: a secret reference"},
			{"mailboxes[0].deliver_to", 5, "at least one Exchange address"},
		}},
		{"err_no_mailboxes.yaml", []wantErr{
			{"mailboxes", 4, "at least one mailbox is required"},
		}},
		{"err_enums.yaml", []wantErr{
			{"delivery.tls", 4, `must be one of starttls, opportunistic, implicit, none; got "ssl"`},
			{"delivery.auth.mechanism", 6, "must be plain or login"},
			{"log.level", 10, `got "verbose"`},
			{"log.format", 11, `got "xml"`},
			{"mailboxes[0].tls", 15, `POP3 has no "opportunistic" mode`},
			{"mailboxes[0].after_delivery", 19, "must be one of delete, keep, keep_days"},
		}},
		{"err_ranges.yaml", []wantErr{
			{"poll_interval", 2, "must be between 1s and 1d, got 2d"},
			{"parallel_mailboxes", 3, "between 1 and 64, got 65"},
			{"retry.max_interval", 6, "must be at least retry.interval (30m), got 10m"},
			{"retry.give_up_after", 7, "must be between 1s and 90d, got 91d"},
			{"delivery.port", 10, "between 1 and 65535, got 0"},
			{"delivery.timeout", 11, "got 11m"},
			{"mailboxes[0].server", 14, "port must be a number between 1 and 65535"},
			{"mailboxes[0].max_messages_per_poll", 18, "got -1"},
			{"mailboxes[0].poll_timeout", 20, "must be at least timeout (1m), got 30s"},
			{"mailboxes[0].duplicate_window", 21, "got 400d"},
			{"duplicate_window", 22, "must be between 0s and 365d, got 366d"},
		}},
		{"err_duplicates.yaml", []wantErr{
			{"mailboxes[1].id", 11, `"sales" is already used by mailboxes[0]`},
			{"mailboxes[1].deliver_to[1]", 15, "already listed as deliver_to[0]"},
			{"mailboxes[2].username", 19, "mailboxes[0] already polls this server and username"},
		}},
		{"err_addresses.yaml", []wantErr{
			{"postmaster", 1, "must be a bare address such as postmaster@corp.example"},
			{"mailboxes[0].deliver_to[0]", 10, "not a valid email address"},
			{"mailboxes[0].deliver_to[1]", 11, "must be a bare address"},
			{"mailboxes[0].deliver_to[2]", 12, "not a valid email address"},
			{"mailboxes[0].deliver_to[3]", 13, "must be a bare address"},
			{"mailboxes[1].sender", 20, "not a valid email address"},
		}},
		{"err_delivery_host.yaml", []wantErr{
			{"delivery.host", 3, `"exchange" is not a fully qualified domain name`},
			{"delivery.helo_domain", 4, "must be a domain name or an address literal"},
		}},
		{"err_server.yaml", []wantErr{
			{"mailboxes[0].server", 6, "port must be a number"},
			{"mailboxes[1].server", 11, "enclose an IPv6 address in brackets"},
			{"mailboxes[2].server", 16, "has no host"},
			{"mailboxes[3].server", 21, "not a valid host name"},
			{"mailboxes[4].server", 26, "port must be a number"},
		}},
		{"err_plaintext.yaml", []wantErr{
			{"mailboxes[0].allow_plaintext_login", 5, "set allow_plaintext_login: true to accept"},
		}},
		{"err_keep_days.yaml", []wantErr{
			{"mailboxes[0].keep_days", 5, "must be between 1 and 3650 when after_delivery is keep_days, got 0"},
			{"mailboxes[1].keep_days", 16, "applies only with after_delivery: keep_days"},
			{"mailboxes[2].keep_days", 23, "got 3651"},
		}},
		{"err_secrets.yaml", []wantErr{
			{"delivery.auth.password", 6, literal},
			{"mailboxes[0].password", 11, literal},
			{"mailboxes[1].password", 16, "env: must be followed by an environment variable name"},
			{"mailboxes[2].password", 21, "file: must be followed by a path"},
			{"mailboxes[3].password", 23, "required"},
			{"mailboxes[4].password", 30, literal},
		}},
		{"err_ca_file.yaml", []wantErr{
			{"delivery.ca_file", 4, "no such file"},
			{"mailboxes[0].ca_file", 11, "holds no PEM certificate"},
			{"mailboxes[1].ca_file", 17, "not a regular file"},
		}},
		{"err_syntax.yaml", []wantErr{{"", 4, "YAML syntax error"}}},
		{"err_two_documents.yaml", []wantErr{{"", 2, "only one YAML document"}}},
		{"err_not_mapping.yaml", []wantErr{{"", 1, "expected a mapping of settings, got a list"}}},
		{"err_empty.yaml", []wantErr{{"", 0, "the configuration is empty"}}},
		// Every kind of validation problem at once: the complete list.
		{"many_errors.yaml", []wantErr{
			{"postmaster", 2, "must be a bare address"},
			{"poll_interval", 3, "got 0s"},
			{"parallel_mailboxes", 4, "got 0"},
			{"retry.max_interval", 7, "must be at least retry.interval"},
			{"retry.give_up_after", 8, "got 120d"},
			{"delivery.host", 10, "not a fully qualified domain name"},
			{"delivery.port", 11, "got 70000"},
			{"delivery.tls", 12, `got "ssl"`},
			{"delivery.timeout", 13, "got 11m"},
			{"delivery.auth.username", 14, "required when delivery.auth is present"},
			{"delivery.auth.mechanism", 15, "must be plain or login"},
			{"delivery.auth.password", 16, literal},
			{"log.level", 18, "verbose"},
			{"log.format", 19, "xml"},
			{"mailboxes[0].id", 21, `"Sales" must be`},
			{"mailboxes[0].allow_plaintext_login", 21, "tls: none"},
			{"mailboxes[0].keep_days", 21, "got 0"},
			{"mailboxes[0].server", 22, "port must be"},
			{"mailboxes[0].deliver_to[0]", 26, "not a valid email address"},
			{"mailboxes[0].poll_timeout", 29, "must be at least timeout (5m), got 1m"},
			{"mailboxes[1].deliver_to", 34, "at least one"},
			{"mailboxes[1].after_delivery", 35, "archive"},
			{"mailboxes[1].max_messages_per_poll", 36, "got -1"},
			{"mailboxes[1].sender", 37, "not a valid email address"},
			{"mailboxes[2].id", 38, "already used by mailboxes[1]"},
			{"mailboxes[2].username", 40, "already polls this server"},
			{"mailboxes[2].deliver_to[1]", 42, "already listed"},
			{"mailboxes[2].keep_days", 43, "applies only with"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(data)
			if c != nil {
				t.Errorf("Parse returned a Config along with an error")
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v (%T), want *Errors", err, err)
			}
			got := *errs
			for i := 0; i < max(len(got), len(tt.want)); i++ {
				switch {
				case i >= len(got):
					t.Errorf("missing problem %d: %s (line %d): ...%s...", i, tt.want[i].path, tt.want[i].line, tt.want[i].msg)
				case i >= len(tt.want):
					t.Errorf("unexpected problem %d: %v", i, got[i])
				default:
					g, w := got[i], tt.want[i]
					if g.Path != w.path || g.Line != w.line || !strings.Contains(g.Msg, w.msg) {
						t.Errorf("problem %d = %q (path %q, line %d)\nwant path %q, line %d, message containing %q",
							i, g.Error(), g.Path, g.Line, w.path, w.line, w.msg)
					}
				}
			}
			// The rendering is one problem per line.
			if n := strings.Count(err.Error(), "\n") + 1; n != len(got) {
				t.Errorf("Error() has %d lines for %d problems:\n%s", n, len(got), err)
			}
		})
	}
}

func TestUnknownKeyErrorNamesLine(t *testing.T) {
	_, err := Parse([]byte("postmaster: postmaster@corp.example\ndelivery:\n  host: exchange.corp.example\n  tsl: starttls\nmailboxes: [{id: a, server: pop.isp.example, username: u, password: env:P, deliver_to: a@corp.example}]\n"))
	if err == nil {
		t.Fatal("Parse accepted an unknown key")
	}
	const want = `delivery.tsl: unknown key; did you mean "tls"? (line 4)`
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant exactly %q", err, want)
	}
}

func TestParseValidMinimalAppliesDefaults(t *testing.T) {
	c := mustParseFile(t, "valid_minimal.yaml")
	want := &Config{
		Postmaster:        "postmaster@corp.example",
		PollInterval:      5 * time.Minute,
		ParallelMailboxes: 4, DeliveriesInFlight: 16, ReplyWindow: DefaultReplyWindow, POP3PipelineDepth: 8,
		Retry: Retry{Interval: 10 * time.Minute, MaxInterval: 2 * time.Hour, GiveUpAfter: 120 * time.Hour},
		Delivery: Delivery{
			Host: "exchange.corp.example", Port: 25, TLS: tlsmode.StartTLS,
			VerifyCertificate: true, Timeout: 60 * time.Second, MaxConnections: DefaultMaxConnections,
		},
		Notify:          Notify{To: "postmaster@corp.example", Badmail: true, RelayDenied: true, TooLarge: true},
		LoopLimit:       3,
		DuplicateWindow: 7 * 24 * time.Hour,
		Archive:         Archive{Dir: "./popconn-data/archive"},
		Ledger:          Ledger{Path: "./popconn-data/ledger.db"},
		Log:             Log{Level: "info", Format: "auto"},
		Mailboxes: []Mailbox{{
			ID:                 "sales",
			Server:             "pop.isp.example:995",
			TLS:                tlsmode.Implicit,
			VerifyCertificate:  true,
			Username:           "sales@isp.example",
			AuthMechanism:      MailboxAuthAuto,
			Password:           SecretRef("env:POP_SALES"),
			DeliverTo:          []string{"sales@corp.example"},
			AfterDelivery:      AfterDeliveryDelete,
			MaxMessagesPerPoll: 500,
			MaxBytesPerPoll:    1 << 30,
			PollTimeout:        10 * time.Minute,
			Timeout:            60 * time.Second,
			Enabled:            true,
			Type:               MailboxIndividual,
			Undeliverable:      Undeliverable{Action: UndeliverableLeave},
			DuplicateWindow:    7 * 24 * time.Hour,
		}},
		deliveryShorthand: true,
	}
	want.Routes = []Route{{Name: DefaultRouteName, Delivery: want.Delivery, AddressSpaces: []string{"*"}, Cost: 1}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(valid_minimal.yaml) =\n%+v\nwant\n%+v", c, want)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
}

func TestParseValidFull(t *testing.T) {
	c := mustParseFile(t, "valid_full.yaml")
	want := &Config{
		Postmaster:        "postmaster@corp.example",
		PollInterval:      90 * time.Second,
		ParallelMailboxes: 64, DeliveriesInFlight: 8, ReplyWindow: 4, POP3PipelineDepth: 16,
		Retry: Retry{Interval: time.Minute, MaxInterval: 24 * time.Hour, GiveUpAfter: 36 * time.Hour},
		Delivery: Delivery{
			Host: "[IPv6:2001:db8::25]", Port: 465, TLS: tlsmode.Implicit,
			VerifyCertificate: false, CAFile: "testdata/ca.pem",
			ServerName: "exchange.corp.example", HELODomain: "popconn.corp.example",
			Timeout: 10 * time.Minute, MaxConnections: 8,
			Auth: &Auth{Mechanism: AuthLogin, Username: "relay@corp.example", Password: SecretRef("file:/run/secrets/relay")},
		},
		Notify:          Notify{To: "postmaster@corp.example", Badmail: true, RelayDenied: true, TooLarge: true},
		LoopLimit:       3,
		DuplicateWindow: 3 * 24 * time.Hour,
		Archive:         Archive{Dir: "/var/lib/popconn/archive"},
		Ledger:          Ledger{Path: "/var/lib/popconn/ledger.db"},
		Log:             Log{Level: "debug", Format: "json"},
		Mailboxes: []Mailbox{{
			ID:                 "lab",
			Server:             "[2001:db8::110]:110",
			TLS:                tlsmode.None,
			AllowPlaintextAuth: true,
			VerifyCertificate:  true,
			Username:           "lab",
			AuthMechanism:      MailboxAuthAuto,
			Password:           SecretRef("secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:popconn/lab-AbCdEf"),
			DeliverTo:          []string{"lab@corp.example", "ops.team@corp.example"},
			AfterDelivery:      AfterDeliveryKeep,
			MaxMessagesPerPoll: 0,
			MaxBytesPerPoll:    0,
			PollTimeout:        time.Hour,
			Timeout:            time.Second,
			Sender:             "bounces@corp.example",
			Enabled:            false,
			DuplicateWindow:    0, // off for this mailbox
		}, {
			// Merged from the first entry with "<<: *base".
			ID:                 "lab.2",
			Server:             "192.0.2.110:1110",
			TLS:                tlsmode.StartTLS,
			VerifyCertificate:  true,
			CAFile:             "testdata/ca.pem",
			ServerName:         "pop.lab.example",
			Username:           "lab",
			AuthMechanism:      MailboxAuthAuto,
			Password:           SecretRef("ssm:/popconn/lab2"),
			DeliverTo:          []string{"lab@corp.example", "ops.team@corp.example"},
			AfterDelivery:      AfterDeliveryKeepDays,
			KeepDays:           30,
			MaxMessagesPerPoll: 0,
			MaxBytesPerPoll:    500_000_000,
			PollTimeout:        time.Hour,
			Timeout:            time.Second,
			Sender:             "bounces@corp.example",
			Enabled:            true,
			DuplicateWindow:    12 * time.Hour,
		}},
		deliveryShorthand: true,
	}
	want.Routes = []Route{{Name: DefaultRouteName, Delivery: want.Delivery, AddressSpaces: []string{"*"}, Cost: 1}}
	for i := range want.Mailboxes {
		want.Mailboxes[i].Type = MailboxIndividual
		want.Mailboxes[i].Undeliverable = Undeliverable{Action: UndeliverableLeave}
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(valid_full.yaml) =\n%+v\nwant\n%+v", c, want)
	}
	wantWarn := []string{"delivery.verify_certificate: certificate checks are off; anyone on the network path can impersonate the server"}
	if w := c.Warnings(); !reflect.DeepEqual(w, wantWarn) {
		t.Errorf("Warnings() = %q, want %q", w, wantWarn)
	}
	if got := c.Delivery.Addr(); got != "[2001:db8::25]:465" {
		t.Errorf("Delivery.Addr() = %q", got)
	}
}

func TestExampleParsesCleanly(t *testing.T) {
	c, err := Parse(Example())
	if err != nil {
		t.Fatalf("Parse(Example()): %v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Example() has warnings: %q", w)
	}
	if len(c.Mailboxes) != 4 || c.Mailboxes[1].Server != "pop.isp.example:995" || c.Mailboxes[1].KeepDays != 14 ||
		c.Mailboxes[2].Type != MailboxGlobal || c.Mailboxes[2].Undeliverable.Action != UndeliverableDelete ||
		c.Mailboxes[3].AuthMechanism != MailboxAuthXOAUTH2 || c.Mailboxes[3].OAuth == nil || c.Mailboxes[3].OAuth.Grant != OAuthClientCredentials {
		t.Errorf("Example() parsed to unexpected mailboxes: %+v", c.Mailboxes)
	}
	// Example returns a copy: changing it does not change the next call.
	e := Example()
	e[0] = 'X'
	if Example()[0] == 'X' {
		t.Error("Example() shares its backing array")
	}
}

// Every Config that Parse returns satisfies Validate.
func TestParsedConfigsAreValid(t *testing.T) {
	for _, f := range []string{"valid_minimal.yaml", "valid_full.yaml", "example.yaml"} {
		c := mustParseFile(t, f)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: Validate after Parse: %v", f, err)
		}
	}
}

// Validate on a Config built in code applies no defaults and reports in
// model order.
func TestValidateZeroConfig(t *testing.T) {
	err := (&Config{}).Validate()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate() = %v, want *Errors", err)
	}
	want := []string{
		"postmaster", "poll_interval", "parallel_mailboxes", "deliveries_in_flight", "reply_window", "pop3_pipeline_depth",
		"retry.interval", "retry.max_interval", "retry.give_up_after",
		"delivery.host", "delivery.port", "delivery.tls", "delivery.timeout", "delivery.max_connections",
		"archive.dir", "ledger.path", "log.level", "log.format", "mailboxes",
	}
	if got := errs.Paths(); !reflect.DeepEqual(got, want) {
		t.Errorf("paths = %q\nwant    %q", got, want)
	}
	for _, e := range *errs {
		if e.Line != 0 {
			t.Errorf("Validate set a line: %v", e)
		}
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // substrings, one per warning, in order
	}{
		{"starttls on 465", func(c *Config) { c.Delivery.Port = 465 }, []string{"delivery.tls: port 465 normally expects tls: implicit, not starttls"}},
		{"none on 465", func(c *Config) { c.Delivery.Port = 465; c.Delivery.TLS = tlsmode.None }, []string{
			"delivery.tls: port 465 normally expects tls: implicit; tls: none will not connect there",
			"delivery.tls: mail is relayed to Exchange unencrypted",
		}},
		{"implicit on 587", func(c *Config) { c.Delivery.Port = 587; c.Delivery.TLS = tlsmode.Implicit }, []string{"tls: implicit on port 587 is unusual"}},
		{"no verification", func(c *Config) { c.Mailboxes[0].VerifyCertificate = false }, []string{"mailboxes[0].verify_certificate: certificate checks are off"}},
		{"auth over opportunistic", func(c *Config) {
			c.Delivery.TLS = tlsmode.Opportunistic
			c.Delivery.Auth = &Auth{Mechanism: AuthPlain, Username: "relay", Password: SecretRef("env:X")}
		}, []string{"delivery.auth: tls: opportunistic sends the SMTP password unencrypted if the server does not offer STARTTLS"}},
		{"pop3 implicit on 110", func(c *Config) { c.Mailboxes[0].Server = "pop.isp.example:110" }, []string{"mailboxes[0].tls: port 110 normally uses starttls or none"}},
		{"plaintext opt-in without tls none", func(c *Config) { c.Mailboxes[0].AllowPlaintextAuth = true }, []string{"mailboxes[0].allow_plaintext_login: has no effect unless tls is none"}},
		{"all disabled", func(c *Config) { c.Mailboxes[0].Enabled = false }, []string{"mailboxes: every mailbox is disabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParseFile(t, "valid_minimal.yaml")
			tt.modify(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("warning case is invalid: %v", err)
			}
			got := c.Warnings()
			if len(got) != len(tt.want) {
				t.Fatalf("Warnings() = %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDeliveryHost(t *testing.T) {
	tests := []struct {
		host    string
		wantErr string // "" = valid
	}{
		{"exchange.corp.example", ""},
		{"exchange.corp.example.", ""},
		{"localhost", ""},
		{"LocalHost", ""},
		{"192.0.2.10", ""},
		{"[192.0.2.10]", ""},
		{"[IPv6:2001:db8::1]", ""},
		{"[ipv6:::1]", ""},
		{"2001:db8::1", ""},
		{"", "required"},
		{"exchange", "not a fully qualified domain name"},
		{"exchange.", "not a fully qualified domain name"},
		{"exchange.corp.example:25", "contains a port; put exchange.corp.example in delivery.host and 25 in delivery.port"},
		{"[2001:db8::1]", "write an IPv6 address literal as [IPv6:2001:db8::1]"},
		{"[192.0.2.10", "must be enclosed in [ and ]"},
		{"[IPv6:192.0.2.10]", "not a valid IPv6 address literal"},
		{"[exchange.corp.example]", "not a valid IP address literal"},
		{"999.1.1.1", "not a valid host name or IP address"},
		{"exch_ange.corp.example", "not a valid host name"},
		{"-x.corp.example", "not a valid host name"},
		{"exchange server.corp.example", "not a valid host name"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			c := mustParseFile(t, "valid_minimal.yaml")
			c.Delivery.Host = tt.host
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "delivery.host: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want delivery.host error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestAddresses covers the address rule (package mailaddr's Mailbox) as
// every address setting applies it, here deliver_to.
func TestAddresses(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string // "" = valid
	}{
		{"sales@corp.example", ""},
		{"sales+team@corp.example", ""},
		{"jörg@corp.example", ""},        // SMTPUTF8 local part, as before
		{"jörg@bücher.example", ""},      // U-label domain: new, like the local part
		{"sales@[192.0.2.10]", ""},       // address literal
		{"sales@[IPv6:2001:db8::1]", ""}, // new: net/mail refused it
		{"sales@localhost", ""},
		{"", "required"},
		{"sales", "no @domain"},
		{`"sales team"@corp.example`, "quoted local part"}, // new: was accepted
		{"sales@corp.example.", "invalid domain"},
		{"sales@corp_x.example", "invalid domain"},
		{"sales@192.0.2.10", "invalid domain"},
		{"sales@[corp.example]", "not a valid IP address literal"}, // new: was accepted
		{"sales@[2001:db8::1]", "write an IPv6 address literal as [IPv6:2001:db8::1]"},
		{"Sales <sales@corp.example>", "must be a bare address such as sales@corp.example"},
		{"sales@corp.example (Sales)", "must be a bare address"},
		{" sales@corp.example", "leading or trailing spaces"},
		{"sa\rles@corp.example", `"\r" is not allowed before the @`},
		{strings.Repeat("s", 65) + "@corp.example", "longer than 64 octets"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c := mustParseFile(t, "valid_minimal.yaml")
			c.Mailboxes[0].DeliverTo = []string{tt.addr}
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "mailboxes[0].deliver_to[0]: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want a deliver_to[0] error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestMailboxTLS: a mailbox takes the POP3 modes only.
func TestMailboxTLS(t *testing.T) {
	tests := []struct {
		mode    tlsmode.Mode
		wantErr string
	}{
		{tlsmode.Implicit, ""},
		{tlsmode.StartTLS, ""},
		{tlsmode.Opportunistic, `mailboxes[0].tls: POP3 has no "opportunistic" mode`},
		{"ssl", `mailboxes[0].tls: must be one of implicit, starttls, none; got "ssl"`},
		{"", `mailboxes[0].tls: must be one of implicit, starttls, none; got ""`},
	}
	for _, tt := range tests {
		c := mustParseFile(t, "valid_minimal.yaml")
		c.Mailboxes[0].TLS = tt.mode
		err := c.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("tls %q: Validate: %v", tt.mode, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("tls %q: Validate = %v, want %q", tt.mode, err, tt.wantErr)
		}
	}
}

func TestDeliveryAddr(t *testing.T) {
	tests := []struct {
		host string
		port int
		want string
	}{
		{"exchange.corp.example", 25, "exchange.corp.example:25"},
		{"[192.0.2.10]", 25, "192.0.2.10:25"},
		{"[IPv6:2001:db8::1]", 587, "[2001:db8::1]:587"},
		{"2001:db8::1", 25, "[2001:db8::1]:25"},
		{"localhost", 2525, "localhost:2525"},
	}
	for _, tt := range tests {
		if got := (Delivery{Host: tt.host, Port: tt.port}).Addr(); got != tt.want {
			t.Errorf("Addr(%q, %d) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
}

func TestMailboxServerDefaultPort(t *testing.T) {
	tests := []struct {
		server, tls, want string
	}{
		{"pop.isp.example", "", "pop.isp.example:995"},
		{"pop.isp.example", "implicit", "pop.isp.example:995"},
		{"pop.isp.example", "starttls", "pop.isp.example:110"},
		{"[2001:db8::1]", "implicit", "[2001:db8::1]:995"},
		{"192.0.2.1", "starttls", "192.0.2.1:110"},
		{"pop.isp.example:1995", "implicit", "pop.isp.example:1995"},
	}
	for _, tt := range tests {
		yaml := "postmaster: p@corp.example\ndelivery: {host: exchange.corp.example}\nmailboxes:\n" +
			"  - {id: a, server: \"" + tt.server + "\", tls: \"" + tt.tls + "\", username: u, password: env:P, deliver_to: a@corp.example}\n"
		c, err := Parse([]byte(yaml))
		if err != nil {
			t.Errorf("%s/%s: %v", tt.server, tt.tls, err)
			continue
		}
		if got := c.Mailboxes[0].Server; got != tt.want {
			t.Errorf("server %q tls %q: Server = %q, want %q", tt.server, tt.tls, got, tt.want)
		}
	}
}

// An absent key takes the default; an explicit zero is validated as given.
func TestExplicitZeroIsNotDefault(t *testing.T) {
	base := "postmaster: p@corp.example\ndelivery: {host: exchange.corp.example}\nmailboxes:\n" +
		"  - {id: a, server: pop.isp.example, username: u, password: env:P, deliver_to: a@corp.example, max_messages_per_poll: 0, max_bytes_per_poll: 0, verify_certificate: false, enabled: false}\n"
	c, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Mailboxes[0]
	if m.MaxMessagesPerPoll != 0 || m.MaxBytesPerPoll != 0 || m.VerifyCertificate || m.Enabled {
		t.Errorf("explicit zeros replaced by defaults: %+v", m)
	}
	_, err = Parse([]byte(base + "parallel_mailboxes: 0\n"))
	if err == nil || !strings.Contains(err.Error(), "parallel_mailboxes: must be between 1 and 64, got 0") {
		t.Errorf("parallel_mailboxes: 0 gave %v", err)
	}
	// A key present with no value (null) takes the default.
	c, err = Parse([]byte(base + "poll_interval:\n"))
	if err != nil || c.PollInterval != 5*time.Minute {
		t.Errorf("poll_interval with no value: %v, %v", c, err)
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load("testdata/valid_minimal.yaml"); err != nil {
		t.Errorf("Load(valid_minimal): %v", err)
	}
	if _, err := Load("testdata/missing.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	_, err := Load("testdata/many_errors.yaml")
	var errs *Errors
	if !errors.As(err, &errs) || len(*errs) != 28 {
		t.Fatalf("Load(many_errors) = %v, want *Errors with 28 problems", err)
	}
	if !strings.HasPrefix(err.Error(), "config testdata/many_errors.yaml: 28 problems:\npostmaster: ") {
		t.Errorf("Load error starts %q", err.Error()[:80])
	}
	// A big file is refused before parsing.
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxConfigSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func mustParseFile(t *testing.T, name string) *Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(%s):\n%v", name, err)
	}
	return c
}
