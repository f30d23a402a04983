package connectortest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/connector/connectortest"
)

var bg = context.Background()

func dial(t *testing.T, m *connectortest.Mailbox) connector.Source {
	t.Helper()
	s, err := m.Dial()(bg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return s
}

// retr reads message num whole and returns its bytes and the reader's error.
func retr(t *testing.T, s connector.Source, num int) (string, error) {
	t.Helper()
	rc, err := s.Retr(bg, num)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func msg(uidl, data string) connectortest.Message {
	return connectortest.Message{UIDL: uidl, Data: []byte(data)}
}

var errCut = errors.New("connection reset")

// Each case runs POP3 commands on a maildrop of three messages and names
// what is left on it.
func TestMailboxSessions(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, m *connectortest.Mailbox)
		left []string
	}{
		{"quit commits the marks", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			mustNil(t, s.Dele(bg, 1, 3))
			mustNil(t, s.Quit(bg))
		}, []string{"u2"}},
		{"close rolls the marks back", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			mustNil(t, s.Dele(bg, 1, 2, 3))
			mustNil(t, s.Close())
		}, []string{"u1", "u2", "u3"}},
		{"a failed quit commits nothing", func(t *testing.T, m *connectortest.Mailbox) {
			m.FailNext(connectortest.OpQuit, 1, nil)
			s := dial(t, m)
			mustNil(t, s.Dele(bg, 1))
			if err := s.Quit(bg); err == nil {
				t.Fatal("scripted QUIT failure did not fail")
			}
			// The next session's QUIT works again.
			s = dial(t, m)
			mustNil(t, s.Dele(bg, 2))
			mustNil(t, s.Quit(bg))
		}, []string{"u1", "u3"}},
		{"a failed dele marks nothing", func(t *testing.T, m *connectortest.Mailbox) {
			m.FailNext(connectortest.OpDele, 1, nil)
			s := dial(t, m)
			if err := s.Dele(bg, 1); err == nil {
				t.Fatal("scripted DELE failure did not fail")
			}
			mustNil(t, s.Quit(bg))
		}, []string{"u1", "u2", "u3"}},
		{"a bad number fails, the others are marked", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			if err := s.Dele(bg, 1, 9, 1, 2); err == nil {
				t.Fatal("DELE of no such message and of a marked one succeeded")
			}
			mustNil(t, s.Quit(bg))
		}, []string{"u3"}},
		{"a marked message is neither listed nor served", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			mustNil(t, s.Dele(bg, 2))
			list, err := s.ListAll(bg)
			mustNil(t, err)
			if got := uids(list); !slices.Equal(got, []string{"u1", "u3"}) {
				t.Fatalf("listed %v", got)
			}
			if _, err := retr(t, s, 2); err == nil {
				t.Fatal("RETR of a marked message succeeded")
			}
			s.Close()
		}, []string{"u1", "u2", "u3"}},
		{"a session sees the maildrop as it opened", func(t *testing.T, m *connectortest.Mailbox) {
			a, b := dial(t, m), dial(t, m)
			m.Add(msg("u4", "late"))
			mustNil(t, a.Dele(bg, 1))
			mustNil(t, a.Quit(bg))
			list, err := b.ListAll(bg)
			mustNil(t, err)
			if got := uids(list); !slices.Equal(got, []string{"u1", "u2", "u3"}) {
				t.Fatalf("second session listed %v", got)
			}
			if _, err := retr(t, b, 1); err == nil {
				t.Fatal("RETR of a message another session expunged succeeded")
			}
			got, err := retr(t, b, 2)
			if err != nil || got != "two" {
				t.Fatalf("RETR 2 = %q, %v", got, err)
			}
			b.Close()
		}, []string{"u2", "u3", "u4"}},
		{"commands after the end fail", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			mustNil(t, s.Quit(bg))
			if _, err := s.ListAll(bg); err == nil {
				t.Fatal("LIST after QUIT succeeded")
			}
			if err := s.Dele(bg, 1); err == nil {
				t.Fatal("DELE after QUIT succeeded")
			}
			mustNil(t, s.Close())
		}, []string{"u1", "u2", "u3"}},
		{"a cancelled context breaks the session", func(t *testing.T, m *connectortest.Mailbox) {
			s := dial(t, m)
			mustNil(t, s.Dele(bg, 1))
			ctx, cancel := context.WithCancel(bg)
			cancel()
			if _, err := s.ListAll(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("LIST with a cancelled context = %v", err)
			}
			if err := s.Quit(bg); err == nil {
				t.Fatal("QUIT on a broken session succeeded")
			}
		}, []string{"u1", "u2", "u3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := connectortest.NewMailbox(msg("u1", "one"), msg("u2", "two"), msg("u3", "three"))
			tt.run(t, m)
			if got := m.UIDLs(); !slices.Equal(got, tt.left) {
				t.Fatalf("left on the server %v, want %v", got, tt.left)
			}
			if st := m.Stats(); st.Open != 0 {
				t.Fatalf("%d sessions left open", st.Open)
			}
		})
	}
}

// LIST gives the scripted size, or the served one; a UIDL may be listed
// twice.
func TestMailboxListing(t *testing.T) {
	m := connectortest.NewMailbox(
		msg("a", "12345"),
		connectortest.Message{UIDL: "dot", Data: []byte(".x\r\n"), ListSize: 5},
		msg("a", "other message, same UIDL"),
	)
	s := dial(t, m)
	defer s.Close()
	list, err := s.ListAll(bg)
	mustNil(t, err)
	want := []connector.ServerMessage{{Num: 1, Size: 5, UID: "a"}, {Num: 2, Size: 5, UID: "dot"}, {Num: 3, Size: 24, UID: "a"}}
	if !slices.Equal(list, want) {
		t.Fatalf("ListAll = %+v, want %+v", list, want)
	}
	if got, err := retr(t, s, 2); err != nil || got != ".x\r\n" {
		t.Fatalf("RETR 2 = %q, %v: want the bytes as served", got, err)
	}
}

// Each fault spoils RETR its own way, for as many RETRs as it says.
func TestMailboxFaults(t *testing.T) {
	const data = "0123456789"
	tests := []struct {
		name       string
		fault      connectortest.Fault
		want       string // bytes read
		wantErr    error  // from Retr or the reader; nil = none
		anyErr     bool   // some error, not a given one
		brokenThen bool   // later commands of the session fail
	}{
		{"refused", connectortest.Fault{Refuse: errCut}, "", errCut, false, false},
		{"cut mid-message", connectortest.Fault{After: 4}, "0123", io.ErrUnexpectedEOF, false, true},
		{"cut with an error", connectortest.Fault{After: 4, Err: errCut}, "0123", errCut, false, true},
		{"cut before the terminator", connectortest.Fault{After: 99}, data, io.ErrUnexpectedEOF, false, true},
		{"cut at once", connectortest.Fault{}, "", io.ErrUnexpectedEOF, false, true},
		{"truncated cleanly", connectortest.Fault{After: 4, Truncate: true}, "0123", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.fault
			f.Times = 1
			m := connectortest.NewMailbox(connectortest.Message{UIDL: "u1", Data: []byte(data), Fault: &f}, msg("u2", "fine"))
			s := dial(t, m)
			got, err := retr(t, s, 1)
			if got != tt.want || (tt.wantErr == nil) != (err == nil) || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("RETR = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			_, err = s.ListAll(bg)
			if tt.brokenThen != (err != nil) {
				t.Fatalf("LIST after the fault = %v, want broken %v", err, tt.brokenThen)
			}
			s.Close()
			// Times: 1 spoils one RETR only.
			s = dial(t, m)
			defer s.Close()
			if got, err := retr(t, s, 1); err != nil || got != data {
				t.Fatalf("second RETR = %q, %v; want the whole message", got, err)
			}
			if n := m.Stats().Retrs["u1"]; n != 2 {
				t.Fatalf("Retrs[u1] = %d, want 2", n)
			}
		})
	}
}

// FailNext fails the next n calls of a step, then none; n < 0 fails all.
func TestMailboxFailNext(t *testing.T) {
	m := connectortest.NewMailbox(msg("u1", "one"))
	m.FailNext(connectortest.OpDial, 2, errCut)
	for i := range 2 {
		if _, err := m.Dial()(bg); !errors.Is(err, errCut) {
			t.Fatalf("dial %d = %v, want the scripted error", i, err)
		}
	}
	s := dial(t, m)
	m.FailNext(connectortest.OpList, -1, nil)
	for range 3 {
		if _, err := s.ListAll(bg); err == nil {
			t.Fatal("LIST succeeded while scripted to fail")
		}
	}
	m.FailNext(connectortest.OpList, 0, nil)
	if _, err := s.ListAll(bg); err != nil {
		t.Fatalf("LIST after the script was cleared: %v", err)
	}
	s.Close()
	if st := m.Stats(); st.Sessions != 1 {
		t.Fatalf("Sessions = %d, want 1 (failed dials open none)", st.Sessions)
	}
}

func TestMailboxStats(t *testing.T) {
	m := connectortest.NewMailbox(msg("u1", "one"), msg("u2", "two"))
	s := dial(t, m)
	retr(t, s, 1)
	retr(t, s, 1)
	retr(t, s, 2)
	mustNil(t, s.Dele(bg, 1, 2))
	mustNil(t, s.Quit(bg))
	dial(t, m) // left open
	want := connectortest.MailboxStats{Sessions: 2, Open: 1, Retrs: map[string]int{"u1": 2, "u2": 1}, Deles: 2, Quits: 1, Expunged: 2}
	if got := m.Stats(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

// Sessions on one maildrop race to delete the same messages: each
// message goes once, and no session sees another's marks.
func TestMailboxConcurrentSessions(t *testing.T) {
	var msgs []connectortest.Message
	for i := range 20 {
		msgs = append(msgs, msg(fmt.Sprint("u", i), fmt.Sprint("message ", i)))
	}
	m := connectortest.NewMailbox(msgs...)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s, err := m.Dial()(bg)
			if err != nil {
				t.Error(err)
				return
			}
			list, _ := s.ListAll(bg)
			for _, x := range list {
				retr(t, s, x.Num)
				s.Dele(bg, x.Num)
			}
			s.Quit(bg)
		})
	}
	wg.Wait()
	if st := m.Stats(); m.Len() != 0 || st.Expunged != 20 || st.Open != 0 {
		t.Fatalf("left %d, expunged %d, open %d; want 0, 20, 0", m.Len(), st.Expunged, st.Open)
	}
}

func uids(list []connector.ServerMessage) []string {
	var out []string
	for _, m := range list {
		out = append(out, m.UID)
	}
	return out
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
