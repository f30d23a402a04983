package ledger_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/popconnector/popconnector/internal/ledger"
)

func TestLastFailure(t *testing.T) {
	stored := &ledger.Failure{Op: "rcpt", Code: 550, Enhanced: "5.7.1", Message: "relay denied"}
	for _, c := range []struct {
		name string
		rc   ledger.Recipient
		want *ledger.Failure
	}{
		{"pending", ledger.Recipient{Status: ledger.Pending}, nil},
		{"accepted", ledger.Recipient{Status: ledger.Accepted, Code: 250, Reply: "queued as 1"}, nil},
		{"suppressed", ledger.Recipient{Status: ledger.Suppressed, Reply: "accepted by m/u at ..."}, nil},
		{"stale failure of an accepted recipient", ledger.Recipient{Status: ledger.Accepted, Failure: stored}, nil},
		{"stored failure wins over the text", ledger.Recipient{Status: ledger.Rejected, Code: 550, Reply: "smtp data: 554 other", Failure: stored}, stored},
		// Records written before Failure: Reply is relay.Error's text.
		{"old rcpt rejection", ledger.Recipient{Status: ledger.Rejected, Code: 550, Enhanced: "5.1.1", Reply: "smtp rcpt: 550 5.1.1 no such user: a@example.com"},
			&ledger.Failure{Op: "rcpt", Code: 550, Enhanced: "5.1.1", Message: "no such user: a@example.com"}},
		{"old deferral", ledger.Recipient{Status: ledger.Deferred, Code: 451, Enhanced: "4.3.0", Reply: "smtp data: 451 4.3.0 try later"},
			&ledger.Failure{Op: "data", Code: 451, Enhanced: "4.3.0", Temporary: true, Message: "try later"}},
		{"old reply without enhanced code", ledger.Recipient{Status: ledger.Rejected, Code: 552, Reply: "smtp data: 552 message too big"},
			&ledger.Failure{Op: "data", Code: 552, Message: "message too big"}},
		{"old connection failure", ledger.Recipient{Status: ledger.Deferred, Reply: "smtp connect: dial tcp 10.0.0.1:25: connection refused"},
			&ledger.Failure{Op: "connect", Temporary: true, Local: true, Message: "dial tcp 10.0.0.1:25: connection refused"}},
		{"old local refusal", ledger.Recipient{Status: ledger.Rejected, Reply: "smtp mail: message of 30000000 octets exceeds the server's SIZE 25000000"},
			&ledger.Failure{Op: "mail", Local: true, Message: "message of 30000000 octets exceeds the server's SIZE 25000000"}},
		{"old error without an op", ledger.Recipient{Status: ledger.Deferred, Reply: "smtp unknown failure"},
			&ledger.Failure{Temporary: true, Local: true, Message: "unknown failure"}},
		// Replies in another form keep their text.
		{"eabc1cd fixture's bare reply", ledger.Recipient{Status: ledger.Deferred, Code: 451, Enhanced: "4.2.2", Reply: "mailbox full"},
			&ledger.Failure{Code: 451, Enhanced: "4.2.2", Temporary: true, Message: "mailbox full"}},
		{"text whose first word has a blank", ledger.Recipient{Status: ledger.Rejected, Code: 550, Reply: "550 no such user: a@example.com"},
			&ledger.Failure{Code: 550, Message: "no such user: a@example.com"}},
		{"empty reply", ledger.Recipient{Status: ledger.Rejected, Code: 554}, &ledger.Failure{Code: 554}},
	} {
		got := c.rc.LastFailure()
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: LastFailure = %+v, want %+v", c.name, got, c.want)
		}
	}
}

// LastFailure returns a copy: changing it leaves the record alone.
func TestLastFailureIsCopy(t *testing.T) {
	rc := ledger.Recipient{Status: ledger.Rejected, Failure: &ledger.Failure{Code: 550}}
	rc.LastFailure().Code = 421
	if rc.Failure.Code != 550 {
		t.Fatalf("changing LastFailure's result changed the recipient: code %d", rc.Failure.Code)
	}
}

// A Failure survives the JSON the bolt ledger stores, and a recipient
// without one writes no "failure" key (records stay as small as before).
func TestFailureJSON(t *testing.T) {
	for _, rc := range []ledger.Recipient{
		{Address: "a@example.com", Status: ledger.Deferred, Failure: &ledger.Failure{Op: "data", Code: 451, Enhanced: "4.3.0", Temporary: true, Local: true, Message: "try later"}},
		{Address: "a@example.com", Status: ledger.Deferred, Failure: &ledger.Failure{}},
		{Address: "a@example.com", Status: ledger.Accepted},
	} {
		b, err := json.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		var back ledger.Recipient
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, rc) {
			t.Errorf("%s reads back as %+v, want %+v", b, back, rc)
		}
	}
	b, _ := json.Marshal(ledger.Recipient{Address: "a", Status: ledger.Accepted})
	if want := `{"address":"a","status":"accepted","at":"0001-01-01T00:00:00Z"}`; string(b) != want {
		t.Errorf("recipient without failure = %s, want %s", b, want)
	}
}
