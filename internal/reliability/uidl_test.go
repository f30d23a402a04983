package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/popconnector/popconnector/internal/pop3/pop3test"
	"github.com/popconnector/popconnector/internal/testenv"
)

// A server that lists one UIDL for two messages: a UIDL that names two
// messages names neither, so both stay on the server untouched; the
// others are delivered.
func TestDuplicateUIDLInOneListing(t *testing.T) {
	o := ShortOptions()
	r := NewRig(t, &o, RigOptions{Script: &testenv.SMTPScript{}})
	ids, msgs := SeqMessages(1, 3)
	poll := 0
	mb := r.ServePOP3(ids, msgs, func(s *pop3test.Session, cmd string) bool {
		if cmd != "UIDL" {
			return false
		}
		if poll == 0 {
			s.Send("+OK", "1 uid-dup", "2 uid-dup", "3 "+pop3test.UID(2), ".")
		} else { // the third was delivered and deleted
			s.Send("+OK", "1 uid-dup", "2 uid-dup", ".")
		}
		return true
	})
	for ; poll < 3; poll++ {
		i := poll
		res := r.Poll()
		if res.DuplicateUIDs != 2 {
			t.Fatalf("poll %d: DuplicateUIDs = %d, want 2 (%+v)", i, res.DuplicateUIDs, res)
		}
		r.Clock.Advance(time.Hour)
	}
	if got := len(mb.Remaining()); got != 2 {
		t.Fatalf("%d messages left on the server, want the 2 sharing a UIDL", got)
	}
	got := r.SMTP.Messages()
	if len(got) != 1 {
		t.Fatalf("%d messages relayed, want only the one with its own UIDL", len(got))
	}
}

// A UIDL whose deletion the server confirmed, listed again for a message
// of the same size: it is another message (the first left the server) and
// must be delivered, not deleted on the old record's account.
func TestUIDLReusedSameSizeAfterConfirmedDelete(t *testing.T) {
	o := ShortOptions()
	r := NewRig(t, &o, RigOptions{Script: &testenv.SMTPScript{}})
	ids, msgs := SeqMessages(1, 2)
	r.ServePOP3(ids, msgs, nil)
	r.PollUntilDone(3)
	if !r.Done() {
		t.Fatalf("first messages not delivered: %v", r.lastErr())
	}
	// Replacements of the same size: one body byte changed.
	ids2 := []string{"seq-101", "seq-102"}
	var msgs2 [][]byte
	for _, m := range msgs {
		c := append([]byte(nil), m...)
		c[len(c)-3] ^= 0x01 // before the final CRLF
		msgs2 = append(msgs2, c)
	}
	r.Snapshot()
	mb := r.ServePOP3(ids2, msgs2, nil) // uid-0 and uid-1 again, same sizes
	r.Clock.Advance(time.Hour)
	r.PollUntilDone(3)
	if got := len(r.SMTP.Messages()); got != 4 {
		t.Fatalf("%d messages relayed, want 4: the same-size messages under reused UIDLs were %s", got,
			fmt.Sprint(len(mb.Remaining()), " left on the server"))
	}
	if n := len(mb.Remaining()); n != 0 {
		t.Fatalf("%d left on the server", n)
	}
}
