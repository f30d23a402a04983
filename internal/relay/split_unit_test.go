package relay

import "testing"

func TestTooManyRecipientsDecision(t *testing.T) {
	cases := []struct {
		name     string
		code     int
		enhanced string
		msg      string
		local    bool
		want     bool
	}{
		{"Exchange", 452, "4.5.3", "Too many recipients", false, true},
		{"Postfix", 452, "4.5.3", "Error: too many recipients", false, true},
		{"451 4.5.3", 451, "4.5.3", "Too many recipients, try later", false, true},
		{"RFC 821 552 5.5.3", 552, "5.5.3", "Too many recipients", false, true},
		{"550 5.5.3", 550, "5.5.3", "Recipient limit exceeded", false, true},
		{"bare 452 (older Postfix)", 452, "", "Error: too many recipients", false, true},
		{"bare 452 other text", 452, "", "Requested action not taken", false, true},
		{"bare 451 too many", 451, "", "Too many recipients", false, true},
		{"bare 552 too many", 552, "", "Too many recipients", false, true},
		{"bare 552 storage", 552, "", "Requested mail action aborted: exceeded storage allocation", false, false},
		{"bare 451 other", 451, "", "Local error in processing", false, false},
		{"mailbox full", 452, "4.2.2", "Mailbox full", false, false},
		{"insufficient storage", 452, "4.3.1", "Insufficient system storage", false, false},
		{"storage, text says too many", 452, "4.3.1", "too many recipients queued, disk full", false, false},
		{"Postfix rate limit", 450, "4.7.1", "Error: too many recipients from [192.0.2.1]", false, false},
		{"greylisting", 450, "4.2.0", "Greylisted", false, false},
		{"unknown user", 550, "5.1.1", "User unknown", false, false},
		{"bare 550", 550, "", "too many recipients", false, false},
		{"local", 452, "4.5.3", "local", true, false},
		{"network", 0, "", "connection reset", false, false},
		{"enhanced 4.15.3", 452, "4.15.3", "odd", false, false},
	}
	for _, tc := range cases {
		e := &Error{Op: "rcpt", Code: tc.code, Enhanced: tc.enhanced, Message: tc.msg, Local: tc.local, Temporary: tc.code/100 != 5}
		if got := tooManyRecipients(e); got != tc.want {
			t.Errorf("%s (%d %s %q): tooManyRecipients = %v, want %v", tc.name, tc.code, tc.enhanced, tc.msg, got, tc.want)
		}
	}
	if tooManyRecipients(nil) {
		t.Error("tooManyRecipients(nil) = true")
	}
}

func TestRcptMax(t *testing.T) {
	cases := map[string]int{
		"":                        0,
		"RCPTMAX=100":             100,
		"MAILMAX=5 rcptmax=20":    20,
		"RCPTMAX=0":               0,
		"RCPTMAX=-3":              0,
		"RCPTMAX=x":               0,
		"RCPTDOMAINMAX=3":         0,
		"RCPTMAX=7 RCPTDOMAINMAX": 7,
	}
	for in, want := range cases {
		if got := rcptMax(in); got != want {
			t.Errorf("rcptMax(%q) = %d, want %d", in, got, want)
		}
	}
}
